//! `wsloop client URL`: stdin lines out as messages, messages in to stdout,
//! like websocat.

use std::io::{BufRead, Write};
use std::net::ToSocketAddrs;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use wsloop::client::{Backoff, Client, ClientOptions, Url};
use wsloop::{CloseCode, Error, Event, HandshakeError, Message};

use crate::args::{Arg, ArgError, Args};

const HELP: &str = "\
wsloop client: connect to a WebSocket server from the terminal

USAGE:
    wsloop client [OPTIONS] URL

Each line read from stdin is sent as a text message (binary with
--binary). Each message received is printed to stdout, one per line
(binary as hex, or raw bytes with --raw). When stdin ends, close 1000 is
sent and the reply awaited. The server's close code and reason go to
stderr.

Exit status: 0 after a normal close (1000 or 1001), 1 after any other
close or a lost connection, 2 for bad arguments, 3 when the connection or
handshake fails (the HTTP status is named when the server refused).

OPTIONS:
    --header 'NAME: VALUE'   Add a request header (repeatable)
    --protocol NAME          Offer a subprotocol (repeatable)
    --binary                 Send stdin lines as binary messages
    --raw                    Print binary messages as raw bytes, not hex
    --ping-interval DUR      Ping after DUR without input; 0 = off [default: 0]
    --pong-timeout DUR       Treat the server as dead if a pong is this
                             late [default: 20s]
    --connect-timeout DUR    Time allowed to connect and upgrade [default: 10s]
    --max-message SIZE       Largest message accepted [default: 16M]
    --reconnect              Reconnect with backoff (1s doubling to 30s,
                             ±10% jitter, 10 attempts) after the connection
                             is lost or closed by the server
    --deflate                Offer permessage-deflate (needs the `deflate`
                             feature)
    --ca FILE                For wss://: trust only the CA certificates in
                             this PEM file [default: the bundled Mozilla
                             roots] (needs the `tls` feature)
    --insecure               For wss://: do not verify the server's
                             certificate. For testing only
    -h, --help               Print this help

EXAMPLE:
    $ wsloop serve --addr 127.0.0.1:9001 &
    $ wsloop client ws://127.0.0.1:9001/
    hello            (typed)
    hello            (echoed by the server)
    ^D
    closed: 1000";

pub struct Options {
    url: String,
    opts: ClientOptions,
    binary: bool,
    raw: bool,
    reconnect: bool,
}

#[cfg(feature = "tls")]
fn set_tls(opts: &mut ClientOptions, ca: Option<String>, insecure: bool) -> Result<(), ArgError> {
    if insecure {
        eprintln!(
            "wsloop client: --insecure: the server's certificate is NOT verified (testing only)"
        );
        opts.tls = Some(wsloop::tls::insecure_client_config());
    } else if let Some(ca) = ca {
        opts.tls = Some(
            wsloop::tls::client_config(Some(ca.as_ref()))
                .map_err(|e| ArgError(format!("wsloop client: --ca: {e}")))?,
        );
    }
    Ok(())
}

#[cfg(not(feature = "tls"))]
fn set_tls(_opts: &mut ClientOptions, ca: Option<String>, insecure: bool) -> Result<(), ArgError> {
    if ca.is_some() || insecure {
        return Err(ArgError(
            "wsloop client: --ca/--insecure need a build with the `tls` feature".into(),
        ));
    }
    Ok(())
}

pub fn parse(mut args: Args) -> Result<Option<Options>, ArgError> {
    let mut url = None;
    let mut ca: Option<String> = None;
    let mut insecure = false;
    let mut opts = ClientOptions::default();
    opts.config.ping_interval = None;
    let mut o = Options {
        url: String::new(),
        opts: ClientOptions::default(),
        binary: false,
        raw: false,
        reconnect: false,
    };
    while let Some(arg) = args.next() {
        let flag = match arg {
            Arg::Positional(p) if url.is_none() => {
                url = Some(p);
                continue;
            }
            Arg::Positional(p) => return Err(args.unknown(&p)),
            Arg::Flag(f) => f,
        };
        match flag.as_str() {
            "help" => {
                println!("{HELP}");
                return Ok(None);
            }
            "header" => {
                let v = args.value("header")?;
                let Some((k, val)) = v.split_once(':') else {
                    return Err(args.bad("header", &v, "'NAME: VALUE'"));
                };
                let k = k.trim();
                if k.is_empty()
                    || !k.bytes().all(|b| b.is_ascii_graphic())
                    || val.contains(['\r', '\n'])
                {
                    return Err(args.bad("header", &v, "'NAME: VALUE'"));
                }
                opts.headers.push((k.to_owned(), val.trim().to_owned()));
            }
            "protocol" => {
                let v = args.value("protocol")?;
                if v.is_empty() || v.contains([',', ' ', '\r', '\n']) {
                    return Err(args.bad("protocol", &v, "a subprotocol token"));
                }
                opts.protocols.push(v);
            }
            "binary" => o.binary = true,
            "deflate" => opts.config.deflate.enabled = true,
            "ca" => ca = Some(args.value("ca")?),
            "insecure" => insecure = true,
            "raw" => o.raw = true,
            "reconnect" => o.reconnect = true,
            "ping-interval" => opts.config.ping_interval = args.duration("ping-interval", true)?,
            "pong-timeout" => {
                opts.config.pong_timeout = args.duration("pong-timeout", false)?.unwrap_or_default()
            }
            "connect-timeout" => {
                opts.config.handshake_timeout =
                    args.duration("connect-timeout", false)?.unwrap_or_default()
            }
            "max-message" => {
                let s = args.size("max-message")?;
                opts.config.max_message_size = s;
                opts.config.max_frame_size = s;
            }
            other => return Err(args.unknown(&format!("--{other}"))),
        }
    }
    let Some(url) = url else {
        return Err(ArgError("wsloop client: missing URL (see --help)".into()));
    };
    if let Err(e) = Url::parse(&url) {
        return Err(ArgError(format!("wsloop client: invalid URL: {e}")));
    }
    if let Err(e) = opts.config.validate() {
        return Err(ArgError(format!("wsloop client: {e}")));
    }
    set_tls(&mut opts, ca, insecure)?;
    o.url = url;
    o.opts = opts;
    Ok(Some(o))
}

enum Input {
    Line(String),
    Eof,
}

const SOCK: Token = Token(0);
const WAKE: Token = Token(1);

/// How one connection ended.
enum Ended {
    /// stdin finished and the close handshake ran.
    Done(i32),
    /// The connection was lost or closed by the server.
    Lost(i32),
    /// Could not connect or upgrade.
    Failed(Error),
}

fn describe(e: &Error) -> String {
    match e {
        Error::Handshake(HandshakeError::Status(s)) => format!(
            "server refused the upgrade with HTTP {s} {}",
            wsloop::handshake::reason_phrase(*s)
        ),
        other => other.to_string(),
    }
}

fn exit_for(code: CloseCode) -> i32 {
    if code == CloseCode::NORMAL || code == CloseCode::GOING_AWAY {
        0
    } else {
        1
    }
}

fn session(
    o: &Options,
    poll: &mut Poll,
    rx: &mpsc::Receiver<Input>,
    stdin_done: &mut bool,
) -> Ended {
    let url = Url::parse(&o.url).expect("checked in parse");
    let addr = match (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map(|mut a| a.next())
    {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Ended::Failed(Error::Url(format!("{} resolves to no address", url.host)))
        }
        Err(e) => return Ended::Failed(Error::Url(format!("cannot resolve {}: {e}", url.host))),
    };
    let mut client = match Client::connect_addr(addr, &url, &o.opts, Instant::now()) {
        Ok(c) => c,
        Err(e) => return Ended::Failed(e),
    };
    if let Err(e) = client.register(poll.registry(), SOCK) {
        return Ended::Failed(e.into());
    }
    let mut events = Events::with_capacity(16);
    let mut was_open = false;
    let mut closing = false;
    let stdout = std::io::stdout();
    let result = loop {
        let now = Instant::now();
        let timeout = client
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                break Ended::Failed(e.into());
            }
        }
        let now = Instant::now();
        client.handle_io(now);
        client.handle_timeout(now);
        if client.is_open() && !was_open {
            was_open = true;
            eprintln!(
                "connected to {}{}",
                o.url,
                client
                    .protocol()
                    .map(|p| format!(" (protocol {p})"))
                    .unwrap_or_default()
            );
        }
        if was_open && !closing {
            while let Ok(input) = rx.try_recv() {
                match input {
                    Input::Line(l) => {
                        let r = if o.binary {
                            client.send_binary(l.as_bytes())
                        } else {
                            client.send_text(&l)
                        };
                        if let Err(e) = r {
                            eprintln!("send failed: {e}");
                        }
                    }
                    Input::Eof => {
                        *stdin_done = true;
                        closing = true;
                        client.close(CloseCode::NORMAL, "", now);
                        break;
                    }
                }
            }
            client.handle_io(now);
        }
        let mut out = stdout.lock();
        while let Some(ev) = client.next_event() {
            match ev {
                Event::Message(Message::Text(t)) => {
                    let _ = writeln!(out, "{t}");
                }
                Event::Message(Message::Binary(b)) => {
                    if o.raw {
                        let _ = out.write_all(&b);
                    } else {
                        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                        let _ = writeln!(out, "{hex}");
                    }
                }
                Event::Close(code, reason) => {
                    eprintln!(
                        "closed: {code}{}",
                        if reason.is_empty() {
                            String::new()
                        } else {
                            format!(" {reason}")
                        }
                    );
                }
                Event::Ping(_) | Event::Pong(_) => {}
            }
        }
        let _ = out.flush();
        drop(out);
        if let Err(e) = client.flush() {
            eprintln!("write failed: {e}");
        }
        if client.is_done() {
            if !was_open {
                break Ended::Failed(
                    client
                        .take_error()
                        .unwrap_or(Error::Handshake(HandshakeError::Eof)),
                );
            }
            let info = client.close_info().cloned();
            let code = info.as_ref().map_or(CloseCode::ABNORMAL, |i| i.code);
            if let Some(e) = client.take_error() {
                eprintln!("connection error: {e}");
            }
            if code == CloseCode::ABNORMAL {
                eprintln!(
                    "connection lost: {}",
                    info.map(|i| i.reason).unwrap_or_default()
                );
            }
            break if closing {
                Ended::Done(exit_for(code))
            } else {
                Ended::Lost(exit_for(code).max(1))
            };
        }
    };
    let _ = client.deregister(poll.registry());
    result
}

pub fn run(o: Options) -> i32 {
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("wsloop client: {e}");
            return 1;
        }
    };
    let waker = match Waker::new(poll.registry(), WAKE) {
        Ok(w) => Arc::new(w),
        Err(e) => {
            eprintln!("wsloop client: {e}");
            return 1;
        }
    };
    let (tx, rx) = mpsc::channel();
    // The loop keeps its own reference: if the stdin thread's were the last,
    // its exit would close the eventfd and lose its final wake-up.
    let _keep_waker = Arc::clone(&waker);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(Input::Line(line)).is_err() {
                return;
            }
            let _ = waker.wake();
        }
        let _ = tx.send(Input::Eof);
        let _ = waker.wake();
    });
    let backoff = Backoff::default();
    let mut attempt = 0u32;
    let mut stdin_done = false;
    loop {
        match session(&o, &mut poll, &rx, &mut stdin_done) {
            Ended::Done(code) => return code,
            Ended::Lost(code) if !o.reconnect || stdin_done => return code,
            Ended::Failed(e) if !o.reconnect => {
                eprintln!(
                    "wsloop client: cannot connect to {}: {}",
                    o.url,
                    describe(&e)
                );
                return 3;
            }
            Ended::Lost(_) => attempt = 0,
            Ended::Failed(e) => {
                attempt += 1;
                if backoff.max_attempts.is_some_and(|m| attempt >= m) {
                    eprintln!(
                        "wsloop client: giving up on {} after {attempt} attempts: {}",
                        o.url,
                        describe(&e)
                    );
                    return 3;
                }
                eprintln!("connect failed: {}", describe(&e));
            }
        }
        let d = backoff.delay(attempt, Backoff::random_unit());
        eprintln!("reconnecting in {:.1}s", d.as_secs_f64());
        std::thread::sleep(d.min(Duration::from_secs(60)));
    }
}
