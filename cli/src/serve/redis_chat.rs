//! The chat with a Redis backplane as readiness and metrics see it: not
//! ready while its link to Redis is down (a load balancer sends new
//! members to an instance that can reach the rooms), and the link and its
//! queue in the metrics. Everything else is the chat's own.

use wsloop::handshake::Request;
use wsloop::server::{ConnId, Ctx, Handler, HttpResponse, MetricsWriter, Upgrade};
use wsloop::{CloseInfo, Message};
use wsloop_chat::{Chat, RedisBus};

/// [`Chat`] over [`RedisBus`], with [`Handler::ready`] and
/// [`Handler::metrics`] from the bus's link state and queue.
pub struct RedisChat(pub Chat<RedisBus>);

impl Handler for RedisChat {
    fn on_upgrade(&mut self, ctx: &mut Ctx<'_>, id: ConnId, req: &Request) -> Upgrade {
        self.0.on_upgrade(ctx, id, req)
    }
    fn on_http(&mut self, req: &Request) -> HttpResponse {
        self.0.on_http(req)
    }
    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        self.0.on_open(ctx, id)
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        self.0.on_message(ctx, id, msg)
    }
    fn on_ping(&mut self, ctx: &mut Ctx<'_>, id: ConnId, payload: &[u8]) {
        self.0.on_ping(ctx, id, payload)
    }
    fn on_pong(&mut self, ctx: &mut Ctx<'_>, id: ConnId, payload: &[u8]) {
        self.0.on_pong(ctx, id, payload)
    }
    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, info: &CloseInfo) {
        self.0.on_close(ctx, id, info)
    }
    fn on_drain(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        self.0.on_drain(ctx, id)
    }
    fn on_shutdown(&mut self, ctx: &mut Ctx<'_>) {
        self.0.on_shutdown(ctx)
    }

    fn ready(&self) -> bool {
        self.0.ready() && self.0.bus().is_linked()
    }

    fn metrics(&self, out: &mut MetricsWriter) {
        self.0.metrics(out);
        let bus = self.0.bus();
        out.gauge(
            "wsloop_chat_redis_up",
            "1 while both connections to Redis (publish and subscribe) are up.",
            &[],
            if bus.is_linked() { 1.0 } else { 0.0 },
        );
        let q = bus.queued();
        out.gauge(
            "wsloop_chat_redis_queue_messages",
            "Chat messages waiting for Redis or in flight.",
            &[],
            q.messages as f64,
        );
        out.gauge(
            "wsloop_chat_redis_queue_bytes",
            "Their bytes.",
            &[],
            q.bytes as f64,
        );
    }
}
