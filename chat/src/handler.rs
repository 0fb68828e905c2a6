//! The chat [`Handler`]: the JSON protocol of the crate docs, over any
//! [`RoomBus`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use wsloop::handshake::Request;
use wsloop::server::{
    http_common, percent_decode, Access, ConnId, Ctx, Handler, HttpResponse, MetricsWriter, Upgrade,
};
use wsloop::Message;

use crate::bus::{send, LocalBus, Refusal, RoomBus, Welcome};
use crate::history::{History, LocalHistory, Since};
use crate::wire::{In, Out, Refused, MAX_REF};
use crate::{ChatConfig, MAX_NAME, MAX_ROOMS_PER_CONN, MAX_SINCE};

const PAGE: &str = include_str!("chat.html");

struct Member {
    id: Arc<str>,
    name: Option<Arc<str>>,
    rooms: usize,
    /// The broadcasts it has seen (`?broadcast_since=`), until its open.
    since: Option<Since>,
}

/// The chat application: mount it on a [`wsloop::server::Server`]. It
/// serves the demo page at `/`, `/healthz`, and the chat at `/ws`.
pub struct Chat<B: RoomBus = LocalBus> {
    access: Access,
    config: ChatConfig,
    bus: B,
    members: HashMap<ConnId, Member>,
    next_id: u64,
    /// Room messages and broadcasts taken (for metrics).
    published: [u64; 2],
}

impl Chat<LocalBus> {
    /// A chat with rooms and history in this process.
    pub fn new(access: Access) -> Self {
        Chat::with_bus(access, LocalBus::new())
    }

    /// A chat with rooms in this process, its limits from `config`
    /// (history per room and rooms kept included).
    pub fn with_config(access: Access, config: ChatConfig) -> Self {
        let history = LocalHistory::new(config.history_per_room, config.max_rooms);
        Chat::with_bus(access, LocalBus::with_history(history)).config(config)
    }
}

impl<H: History> Chat<LocalBus<H>> {
    /// A chat with rooms in this process and history in `history`.
    pub fn with_history(access: Access, history: H) -> Self {
        Chat::with_bus(access, LocalBus::with_history(history))
    }
}

impl<B: RoomBus> Chat<B> {
    /// A chat whose rooms travel through `bus`.
    pub fn with_bus(access: Access, bus: B) -> Self {
        Chat {
            access,
            config: ChatConfig::default(),
            bus,
            members: HashMap::new(),
            next_id: 0,
            published: [0; 2],
        }
    }

    /// Sets the chat's own limits and switches (input size, broadcast).
    /// The bus keeps the history limits it was made with.
    pub fn config(mut self, config: ChatConfig) -> Self {
        self.config = config;
        self
    }

    /// The bus rooms travel through.
    pub fn bus(&self) -> &B {
        &self.bus
    }

    fn handle(&mut self, ctx: &mut Ctx<'_>, id: ConnId, input: In) -> Result<(), Refusal> {
        let Some(me) = self.members.get(&id) else {
            return Ok(());
        };
        let (from, name) = (me.id.clone(), me.name.clone());
        match input {
            In::Join { room, since, epoch } => {
                let since = since.map(|seq| Since { seq, epoch });
                let member = self.bus.is_member(ctx, id, &room);
                if !member {
                    let me = self.members.get_mut(&id).expect("checked above");
                    if me.rooms >= MAX_ROOMS_PER_CONN {
                        return Err(Refused(format!(
                            "too many rooms: at most {MAX_ROOMS_PER_CONN} per connection"
                        ))
                        .into());
                    }
                }
                // Answered when the bus knows where the room stands:
                // joined, gap, replay, then live, in that order.
                self.bus.join(ctx, id, &room, since.as_ref(), member)?;
                if !member {
                    if let Some(me) = self.members.get_mut(&id) {
                        me.rooms += 1;
                    }
                }
            }
            In::Leave { room } => {
                if !self.bus.leave(ctx, id, &room) {
                    return Err(Refused(format!("not in room \"{room}\"")).into());
                }
                if let Some(me) = self.members.get_mut(&id) {
                    me.rooms = me.rooms.saturating_sub(1);
                }
                send(ctx, id, &Out::Left { room: &room });
            }
            In::Message { room, text, .. } => {
                if !self.bus.is_member(ctx, id, &room) {
                    return Err(Refused(format!("not in room \"{room}\": join it first")).into());
                }
                self.bus
                    .publish(ctx, &room, &from, name.as_deref(), &text)?;
                self.published[0] += 1;
            }
            In::Broadcast { text, .. } => {
                if !self.config.broadcast {
                    return Err(Refused(
                        "broadcast is turned off on this server: send to a room".into(),
                    )
                    .into());
                }
                self.bus.broadcast(ctx, &from, name.as_deref(), &text)?;
                self.published[1] += 1;
            }
        }
        Ok(())
    }
}

/// What a reconnecting client has seen of the broadcast stream, from the
/// upgrade's `?broadcast_since=N` (and `&broadcast_epoch=E`, the
/// `broadcast_epoch` of its earlier welcome). The catch-up is asked for at
/// the upgrade, not in a later request, so that it is answered before any
/// live broadcast reaches the connection: each `seq` once, in order.
fn broadcast_since(req: &Request) -> Result<Option<Since>, Upgrade> {
    let Some(raw) = req.query_param("broadcast_since") else {
        return Ok(None);
    };
    let seq = raw
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= MAX_SINCE)
        .ok_or_else(|| {
            Upgrade::reject(
                400,
                format!("broadcast_since must be a whole number from 0 to {MAX_SINCE}"),
            )
        })?;
    let epoch = match req.query_param("broadcast_epoch") {
        None => None,
        Some(e) => Some(
            percent_decode(e)
                .filter(|e| e.len() <= MAX_REF)
                .ok_or_else(|| {
                    Upgrade::reject(
                        400,
                        format!("broadcast_epoch must be at most {MAX_REF} bytes"),
                    )
                })?,
        ),
    };
    Ok(Some(Since { seq, epoch }))
}

/// A display name from the upgrade's `?name=`: trimmed, control characters
/// removed, at most [`MAX_NAME`] characters; `None` if nothing is left.
fn display_name(req: &Request) -> Option<Arc<str>> {
    let raw = percent_decode(req.query_param("name")?)?;
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect();
    (!name.is_empty()).then(|| name.into())
}

impl<B: RoomBus> Handler for Chat<B> {
    fn on_upgrade(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, req: &Request) -> Upgrade {
        if req.path() != "/ws" {
            return Upgrade::reject(404, "the chat WebSocket endpoint is /ws");
        }
        if let Some(no) = self.access.check(req) {
            return no;
        }
        let since = match broadcast_since(req) {
            Ok(since) => since,
            Err(no) => return no,
        };
        self.next_id += 1;
        let member_id = self.bus.member_id(self.next_id);
        self.members.insert(
            id,
            Member {
                id: member_id.into(),
                name: display_name(req),
                rooms: 0,
                since,
            },
        );
        Upgrade::accept()
    }

    fn on_http(&mut self, req: &Request) -> HttpResponse {
        match (req.method.as_str(), req.path()) {
            ("GET" | "HEAD", "/" | "/index.html") => {
                let mut r = HttpResponse::with_type(200, "text/html; charset=utf-8", PAGE);
                r.headers.extend([
                    ("Cache-Control".into(), "no-store".into()),
                    ("X-Content-Type-Options".into(), "nosniff".into()),
                    (
                        "Content-Security-Policy".into(),
                        "default-src 'none'; script-src 'unsafe-inline'; \
                         style-src 'unsafe-inline'; connect-src 'self' ws: wss:; \
                         img-src 'self' data:; base-uri 'none'; form-action 'none'"
                            .into(),
                    ),
                ]);
                r
            }
            (_, "/healthz" | "/ws") => http_common(req),
            _ => HttpResponse::text(404, "not found: the chat is at /, its WebSocket at /ws\n"),
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        let since = m.since.take();
        let welcome = Welcome {
            id: m.id.clone(),
            name: m.name.clone(),
        };
        if self.config.broadcast {
            // Welcome, gap, missed broadcasts, then live ones, each once.
            self.bus.open(ctx, id, &welcome, since.as_ref());
        } else {
            let _ = ctx.send(id, Message::Text(Cow::Owned(welcome.json(None))));
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        let input = match &msg {
            Message::Text(t) => In::parse(t, self.config.max_input),
            Message::Binary(_) => Err(Refused(
                "binary messages are not understood: send JSON in text messages".into(),
            )),
        };
        let (result, reference) = match input {
            Ok(input) => {
                let reference = input.reference().map(str::to_owned);
                (self.handle(ctx, id, input), reference)
            }
            Err(e) => (Err(e.into()), None),
        };
        if let Err(r) = result {
            send(
                ctx,
                id,
                &Out::Error {
                    message: &r.message,
                    retry: r.retry,
                    reference: reference.as_deref(),
                },
            );
        }
    }

    fn on_shutdown(&mut self, ctx: &mut Ctx<'_>) {
        self.bus.shutdown(ctx);
    }

    fn ready(&self) -> bool {
        self.bus.ready()
    }

    fn metrics(&self, out: &mut MetricsWriter) {
        out.gauge(
            "wsloop_chat_members",
            "Chat members connected to this server.",
            &[],
            self.members.len() as f64,
        );
        for (kind, n) in ["room", "broadcast"].into_iter().zip(self.published) {
            out.counter(
                "wsloop_chat_publishes_total",
                "Messages taken for delivery: to a room, or broadcast to everyone.",
                &[("kind", kind)],
                n,
            );
        }
        self.bus.metrics(out);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _info: &wsloop::CloseInfo) {
        // The library has already taken the connection out of its rooms.
        self.members.remove(&id);
        self.bus.closed(id);
    }
}
