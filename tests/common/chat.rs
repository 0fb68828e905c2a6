//! A member of `wsloop serve --app chat` (the JSON protocol over the
//! library's blocking client), alone or on instances that share rooms
//! through a Redis backplane.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use wsloop::client::{connect, WebSocket};
use wsloop::{Error, Message};

/// How long a member waits for what it expects.
pub const CHAT_WAIT: Duration = Duration::from_secs(5);
/// The same through a Redis backplane (one more hop, and a restart to
/// come back from).
pub const BACKPLANE_WAIT: Duration = Duration::from_secs(10);

/// One chat connection that has had its welcome.
pub struct Peer {
    pub ws: WebSocket,
    pub id: String,
    /// The `welcome` the server sent first.
    pub welcome: Value,
    wait: Duration,
    /// Every join must be served through the Redis backplane.
    backplane: bool,
}

impl Peer {
    /// A member of the chat at `addr`.
    pub fn connect(addr: SocketAddr) -> Peer {
        Self::from_ws(connect(&format!("ws://{addr}/ws")).expect("connect to the chat"))
    }

    /// A member of an instance with a Redis backplane: waits are
    /// [`BACKPLANE_WAIT`] and each `join` must come through Redis.
    pub fn connect_backplane(addr: SocketAddr) -> Peer {
        let ws = connect(&format!("ws://{addr}/ws")).expect("connect to the chat");
        Self::welcomed(ws, BACKPLANE_WAIT, true)
    }

    /// A member on a connection already upgraded (its welcome not read).
    pub fn from_ws(ws: WebSocket) -> Peer {
        Self::welcomed(ws, CHAT_WAIT, false)
    }

    fn welcomed(mut ws: WebSocket, wait: Duration, backplane: bool) -> Peer {
        ws.set_read_timeout(Some(wait));
        let mut p = Peer {
            ws,
            id: String::new(),
            welcome: Value::Null,
            wait,
            backplane,
        };
        let w = p.expect("welcome");
        p.id = w["id"].as_str().expect("welcome id is a string").to_owned();
        p.welcome = w;
        p
    }

    pub fn send(&mut self, v: Value) {
        self.ws.send_text(&v.to_string()).expect("send to the chat");
    }

    /// A message to `room`.
    pub fn say(&mut self, room: &str, text: &str) {
        self.send(json!({"type": "message", "room": room, "text": text}));
    }

    /// The next JSON message within `wait`; `None` if nothing came.
    pub fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        self.ws.set_read_timeout(Some(wait));
        let r = match self.ws.recv_message() {
            Ok(Message::Text(t)) => Some(
                serde_json::from_str(&t)
                    .unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {t}")),
            ),
            Ok(other) => panic!("expected a text message, got {other:?}"),
            Err(Error::Timeout(_)) => None,
            Err(e) => panic!(
                "{}: waiting for a chat message: {e} (close: {:?})",
                self.id,
                self.ws.close_info()
            ),
        };
        self.ws.set_read_timeout(Some(self.wait));
        r
    }

    pub fn recv(&mut self) -> Value {
        let wait = self.wait;
        self.try_recv(wait)
            .unwrap_or_else(|| panic!("{}: nothing arrived within {wait:?}", self.id))
    }

    /// The next message, which must be of type `ty`.
    pub fn expect(&mut self, ty: &str) -> Value {
        let v = self.recv();
        assert_eq!(v["type"], ty, "{}: expected a {ty:?}, got {v}", self.id);
        v
    }

    /// Joins and returns the `joined`.
    pub fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "join", "room": room}));
        let j = self.expect("joined");
        assert_eq!(j["room"], room);
        if self.backplane {
            assert!(j.get("local").is_none(), "joined without Redis: {j}");
        }
        j
    }

    /// Sends `request` and expects an error whose message contains `want`.
    pub fn error(&mut self, request: Value, want: &str) {
        self.send(request.clone());
        let e = self.expect("error");
        let m = e["message"].as_str().expect("error message");
        assert!(
            m.contains(want),
            "error for {request}: {m:?} lacks {want:?}"
        );
    }

    /// Nothing arrives for `d`.
    pub fn silent(&mut self, d: Duration) {
        if let Some(v) = self.try_recv(d) {
            panic!("{} expected nothing, got {v}", self.id);
        }
    }
}

/// The `seq` of a chat message.
pub fn seq(v: &Value) -> u64 {
    v["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {v}"))
}

/// Reads room messages (texts "m<seq>") until `seq >= until`, recording
/// their seqs.
pub fn collect_until(p: &mut Peer, until: u64, seqs: &mut Vec<u64>) {
    while seqs.last().copied().unwrap_or(0) < until {
        let m = p.recv();
        match m["type"].as_str() {
            Some("message") => {
                assert_eq!(m["text"], format!("m{}", seq(&m)), "text matches seq");
                seqs.push(seq(&m));
            }
            _ => panic!("{}: unexpected {m}", p.id),
        }
    }
}

/// Leaves `room` mid-stream: what was sent before "left" still arrives
/// and is recorded in `seqs`.
pub fn leave_recording(p: &mut Peer, room: &str, seqs: &mut Vec<u64>) {
    p.send(json!({"type": "leave", "room": room}));
    loop {
        let m = p.recv();
        match m["type"].as_str() {
            Some("message") => seqs.push(seq(&m)),
            Some("left") => break,
            _ => panic!("unexpected {m}"),
        }
    }
}
