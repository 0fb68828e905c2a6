//! Requests from other threads, sent through a [`Handle`](super::Handle),
//! and the graceful shutdown one of them starts.

use log::info;

use crate::close::CloseCode;
use crate::protocol::Message;

use super::entry::{kill, Phase};
use super::{handler, ConnId, Ctx, Handler, Server};

/// A request from another thread, carried by a [`Handle`](super::Handle).
pub(crate) enum Command {
    Send(ConnId, Message<'static>),
    Broadcast(Message<'static>),
    Close(ConnId, CloseCode, String),
    Run(Box<dyn FnOnce(&mut Ctx<'_>) + Send>),
    Shutdown,
}

impl<H: Handler> Server<H> {
    pub(super) fn run_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            let mut ctx = Ctx {
                core: &mut self.core,
            };
            match cmd {
                Command::Send(id, msg) => {
                    let _ = ctx.send(id, msg);
                }
                Command::Broadcast(msg) => {
                    ctx.broadcast_all(&msg);
                }
                Command::Close(id, code, reason) => ctx.close(id, code, &reason),
                Command::Run(f) => f(&mut ctx),
                Command::Shutdown => self.begin_shutdown(),
            }
        }
    }

    pub(super) fn begin_shutdown(&mut self) {
        if self.core.shutdown_at.is_some() {
            return;
        }
        let now = self.core.now;
        info!("graceful shutdown: closing {} connections", self.core.open);
        let deadline = now + self.core.config.shutdown_timeout;
        self.core.shutdown_at = Some(deadline);
        if let Some(mut l) = self.listener.take() {
            let _ = self.core.registry.deregister(&mut l);
        }
        self.accept_resume = None;
        self.handler.on_shutdown(&mut Ctx {
            core: &mut self.core,
        });
        let keys: Vec<usize> = self.core.slab.iter().map(|(k, _)| k).collect();
        let (code, reason) = handler::SHUTDOWN_CLOSE;
        for key in keys {
            let e = &mut self.core.slab[key];
            match &mut e.phase {
                Phase::Open { conn, .. } => {
                    // Queued after everything already queued: nothing
                    // accepted before the signal is lost.
                    conn.close_until(code, reason, deadline);
                    self.core.mark_dirty(key);
                }
                Phase::Handshake { .. } => {
                    kill(&mut self.core, &mut self.handler, key, "shutdown");
                }
                Phase::Draining { .. } => {}
            }
        }
    }
}
