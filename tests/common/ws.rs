//! Checks with the library's own blocking client
//! (`wsloop::client::WebSocket`). The `_or` variants take `context`, shown
//! when a check fails (the peer's log, say).

use std::time::Duration;

use wsloop::client::{connect_with, ClientOptions, WebSocket};
use wsloop::{CloseCode, Event, Message};

use super::frames::{pattern, text_pattern};

/// Connects to `url` with `o` (panicking with the error) and sets the
/// read timeout.
pub fn open_ws(url: &str, o: &ClientOptions, read_timeout: Duration) -> WebSocket {
    let mut ws = connect_with(url, o).unwrap_or_else(|e| panic!("connect {url}: {e} ({e:?})"));
    ws.set_read_timeout(Some(read_timeout));
    ws
}

/// `"\n" + context()`, or nothing for an empty context.
fn shown(context: impl Fn() -> String) -> String {
    let c = context();
    if c.is_empty() {
        c
    } else {
        format!("\n{c}")
    }
}

/// The next message, skipping pings and pongs; panics on anything else.
pub fn next_message(ws: &mut WebSocket) -> Message<'static> {
    next_message_or(ws, String::new)
}

pub fn next_message_or(ws: &mut WebSocket, context: impl Fn() -> String) -> Message<'static> {
    loop {
        match ws.recv() {
            Ok(Event::Message(m)) => return m,
            Ok(Event::Ping(_) | Event::Pong(_)) => continue,
            Ok(other) => panic!("expected a message, got {other:?}{}", shown(context)),
            Err(e) => panic!(
                "expected a message, got error {e} ({e:?}){}",
                shown(context)
            ),
        }
    }
}

/// Expects a text message equal to `want` (pings and pongs skipped).
pub fn expect_text(ws: &mut WebSocket, want: &str) {
    expect_text_or(ws, want, String::new)
}

pub fn expect_text_or(ws: &mut WebSocket, want: &str, context: impl Fn() -> String) {
    match next_message_or(ws, &context) {
        Message::Text(t) => assert!(
            t == want,
            "text of {} bytes differs from the {} sent (first difference at {:?}){}",
            t.len(),
            want.len(),
            t.bytes().zip(want.bytes()).position(|(a, b)| a != b),
            shown(context)
        ),
        Message::Binary(b) => panic!(
            "expected text of {} bytes, got binary of {}{}",
            want.len(),
            b.len(),
            shown(context)
        ),
    }
}

/// Expects a binary message equal to `want` (pings and pongs skipped).
pub fn expect_binary(ws: &mut WebSocket, want: &[u8]) {
    expect_binary_or(ws, want, String::new)
}

pub fn expect_binary_or(ws: &mut WebSocket, want: &[u8], context: impl Fn() -> String) {
    match next_message_or(ws, &context) {
        Message::Binary(b) => assert!(
            b.as_ref() == want,
            "binary of {} bytes differs from the {} sent (first difference at {:?}){}",
            b.len(),
            want.len(),
            b.iter().zip(want).position(|(a, b)| a != b),
            shown(context)
        ),
        Message::Text(t) => panic!(
            "expected binary of {} bytes, got text of {}{}",
            want.len(),
            t.len(),
            shown(context)
        ),
    }
}

/// For each of `sizes` (the `i`th of length `n`), a text of
/// `text_pattern(n, i)` and a binary of `pattern(n, i)` echoed back equal.
pub fn echo_round(ws: &mut WebSocket, sizes: &[usize]) {
    echo_round_or(ws, sizes, String::new)
}

pub fn echo_round_or(ws: &mut WebSocket, sizes: &[usize], context: impl Fn() -> String) {
    for (i, &n) in sizes.iter().enumerate() {
        let text = text_pattern(n, i as u8);
        ws.send_text(&text)
            .unwrap_or_else(|e| panic!("send text {n}: {e}{}", shown(&context)));
        expect_text_or(ws, &text, &context);
        let bin = pattern(n, i as u8);
        ws.send_binary(&bin)
            .unwrap_or_else(|e| panic!("send binary {n}: {e}{}", shown(&context)));
        expect_binary_or(ws, &bin, &context);
    }
}

/// Sends every one of `msgs` as binary before reading any echo; they come
/// back equal and in order.
pub fn echo_pipelined(ws: &mut WebSocket, msgs: &[Vec<u8>]) {
    echo_pipelined_or(ws, msgs, String::new)
}

pub fn echo_pipelined_or(ws: &mut WebSocket, msgs: &[Vec<u8>], context: impl Fn() -> String) {
    for m in msgs {
        ws.send_binary(m).unwrap();
    }
    for (k, m) in msgs.iter().enumerate() {
        match next_message_or(ws, &context) {
            Message::Binary(b) => {
                assert!(b == *m, "pipelined message {k} differs{}", shown(&context))
            }
            other => panic!("pipelined message {k}: got {other:?}{}", shown(&context)),
        }
    }
}

/// Sends a ping with `payload` and expects its pong (other pings skipped).
pub fn ping_expect_pong(ws: &mut WebSocket, payload: &[u8]) {
    ws.ping(payload).unwrap();
    loop {
        match ws.recv() {
            Ok(Event::Pong(p)) => {
                assert_eq!(p.as_ref(), payload);
                break;
            }
            Ok(Event::Ping(_)) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    }
}

/// Closes with 1000 and `reason`; the close must be clean with 1000.
pub fn close_normally_or(ws: &mut WebSocket, reason: &str, context: impl Fn() -> String) {
    let info = ws.close(CloseCode::NORMAL, reason).unwrap();
    assert_eq!(
        (info.code, info.clean),
        (CloseCode::NORMAL, true),
        "{info:?}{}",
        shown(context)
    );
}
