//! What a send is told in each state of the client (the refusal comes
//! from the client before the upgrade, from the closed connection after),
//! and that the client's state follows a close at once.

use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::input_tests::{frame, serve};
use super::{Client, ClientOptions, Url};
use crate::error::{ApiError, Error};
use crate::protocol::{Event, Message};

fn refusals(c: &mut Client) -> Vec<String> {
    let before = c.buffered();
    let out = vec![
        format!("{:?}", c.send_text("late").err()),
        format!("{:?}", c.send_binary(b"late").err()),
        format!("{:?}", c.send(Message::Text("late".into())).err()),
        format!("{:?}", c.ping(b"late").err()),
        // Too long for a ping, but the closed connection is said first.
        format!("{:?}", c.ping(&[0; 200]).err()),
    ];
    assert_eq!(c.buffered(), before, "a refused send queued something");
    out
}

#[test]
fn sends_are_refused_alike_before_the_upgrade_and_after_the_close() {
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    let (addr, server) = serve(frame(0x8, &close), Duration::from_millis(300));
    let mut poll = Poll::new().expect("poll");
    let url = Url::parse(&format!("ws://{addr}/")).expect("url");
    let mut c = Client::connect_addr(addr, &url, &ClientOptions::default(), Instant::now())
        .expect("connect");
    c.register(poll.registry(), Token(0)).expect("register");

    let not_upgraded = format!("{:?}", Some(Error::Api(ApiError::NotUpgraded)));
    for r in refusals(&mut c) {
        assert_eq!(r, not_upgraded);
    }

    let closed = format!("{:?}", Some(Error::ConnectionClosed));
    let mut events = Events::with_capacity(8);
    let mut seen_close = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.is_done() && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .expect("poll");
        for ev in events.iter() {
            c.handle_event(ev, Instant::now());
        }
        while let Some(is_close) = c.next_event_with(|ev| matches!(ev, Event::Close(..))) {
            assert!(is_close, "only a close was sent");
            seen_close = true;
            // The client follows the close before the next call: it waits
            // for the server's FIN until the close timeout.
            assert!(!c.is_open());
            assert!(!c.is_done());
            assert!(
                c.poll_timeout().is_some(),
                "no close deadline right after the close"
            );
            for r in refusals(&mut c) {
                assert_eq!(r, closed, "after the close");
            }
        }
        let _ = c.flush();
    }
    assert!(seen_close, "the close was not received");
    assert!(c.is_done(), "the server's FIN was not seen");
    for r in refusals(&mut c) {
        assert_eq!(r, closed, "once done");
    }
    server.join().expect("server");
}
