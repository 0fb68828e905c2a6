//! Requests from other threads, sent through a [`Handle`](super::Handle),
//! the bound on how many may wait, and the graceful shutdown one of them
//! starts.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use log::info;
use mio::Waker;

use crate::close::CloseCode;
use crate::error::CapacityError;
use crate::protocol::Message;

use super::entry::{respond, Phase};
use super::guard::guarded;
use super::{handler, ops, ConnId, Ctx, Handler, Server};

/// Requests run per loop pass, and their payload bytes: past either, the
/// rest wait for the next pass, so sockets are served in between however
/// fast other threads send.
const COMMANDS_PER_PASS: usize = 256;
const COMMAND_BYTES_PER_PASS: usize = 4 << 20;

/// A request from another thread, carried by a [`Handle`](super::Handle).
pub(crate) enum Command {
    Send(ConnId, Message<'static>),
    Broadcast(Message<'static>),
    Close(ConnId, CloseCode, String),
    Run(Box<dyn FnOnce(&mut Ctx<'_>) + Send>),
    Shutdown,
}

impl Command {
    /// The payload bytes it holds (what the byte bound counts).
    pub(crate) fn weight(&self) -> usize {
        match self {
            Command::Send(_, m) | Command::Broadcast(m) => m.as_bytes().len(),
            Command::Close(_, _, reason) => reason.len(),
            Command::Run(_) | Command::Shutdown => 0,
        }
    }
}

/// What waits in the channel between the handles and the loop, counted by
/// both ends: a handle adds before sending, the loop subtracts as it takes.
pub(crate) struct Backlog {
    commands: AtomicUsize,
    bytes: AtomicUsize,
    max_commands: usize,
    max_bytes: usize,
    /// Requests refused because the queue was full (for metrics).
    refused: AtomicU64,
}

impl Backlog {
    pub(crate) fn new(max_commands: usize, max_bytes: usize) -> Self {
        Backlog {
            commands: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_commands,
            max_bytes,
            refused: AtomicU64::new(0),
        }
    }

    /// Reserves room for `cmd`. `Ok(true)` if the queue was empty (the loop
    /// must be woken); a full queue refuses everything but a shutdown, and
    /// always takes one request when empty.
    pub(crate) fn reserve(&self, cmd: &Command) -> Result<bool, CapacityError> {
        let weight = cmd.weight();
        let commands = self.commands.fetch_add(1, Ordering::AcqRel);
        let bytes = self.bytes.fetch_add(weight, Ordering::AcqRel);
        let over = commands >= self.max_commands || bytes + weight > self.max_bytes;
        if over && commands > 0 && !matches!(cmd, Command::Shutdown) {
            self.release(weight);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(CapacityError::CommandQueueFull {
                commands,
                bytes,
                max_commands: self.max_commands,
                max_bytes: self.max_bytes,
            });
        }
        Ok(commands == 0)
    }

    /// Gives back what a request reserved (sent, or failed to send).
    pub(crate) fn release(&self, weight: usize) {
        self.bytes.fetch_sub(weight, Ordering::AcqRel);
        self.commands.fetch_sub(1, Ordering::AcqRel);
    }

    /// Requests waiting (reserved, not yet run).
    pub(crate) fn waiting(&self) -> usize {
        self.commands.load(Ordering::Acquire)
    }

    /// Requests refused so far because the queue was full.
    pub(crate) fn refusals(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// True while requests are reserved: the loop must not sleep.
    pub(crate) fn pending(&self) -> bool {
        self.commands.load(Ordering::Acquire) > 0
    }
}

/// Wakes one loop to run the callback it was made with (see
/// [`Server::notifier`]), from any thread, without the request queue: it
/// is a flag, so a call never waits, never allocates and is never refused
/// for a full queue; calls before the loop gets to it run the callback
/// once.
#[derive(Clone)]
pub struct Notifier {
    flag: Weak<AtomicBool>,
    waker: Arc<Waker>,
}

impl Notifier {
    /// Asks the loop to run the callback once more, soon (in its next
    /// pass, after its sockets and requests). False if the server has
    /// stopped running.
    pub fn notify(&self) -> bool {
        let Some(flag) = self.flag.upgrade() else {
            return false;
        };
        // Only the call that raises the flag wakes (one syscall).
        if !flag.swap(true, Ordering::AcqRel) {
            // A failed wake leaves the flag for the next pass.
            let _ = self.waker.wake();
        }
        true
    }
}

/// A registered callback and the flag its [`Notifier`]s raise.
pub(crate) struct Notified {
    flag: Arc<AtomicBool>,
    run: Box<dyn FnMut(&mut Ctx<'_>) + Send>,
}

impl<H: Handler> Server<H> {
    /// A [`Notifier`] that makes this loop call `f` once per pass in which
    /// it was notified. Callbacks are registered before [`Server::run`]
    /// and kept for the server's life (the loop holds a fixed set), and a
    /// callback that panics is logged and runs again when notified again.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use wsloop::server::{ConnId, Ctx, Handler, Server};
    /// use wsloop::{Config, Message};
    ///
    /// struct Quiet;
    /// impl Handler for Quiet {
    ///     fn on_message(&mut self, _: &mut Ctx<'_>, _: ConnId, _: Message<'_>) {}
    /// }
    /// let mut server = Server::bind("127.0.0.1:0", Config::default(), Quiet)?;
    /// let (tx, rx) = mpsc::channel();
    /// let notifier = server.notifier(move |_ctx| {
    ///     let _ = tx.send(());
    /// });
    /// let handle = server.handle();
    /// let thread = std::thread::spawn(move || server.run().map(|_| ()));
    /// assert!(notifier.notify());
    /// rx.recv_timeout(Duration::from_secs(10)).expect("the loop ran it");
    /// handle.shutdown()?;
    /// thread.join().expect("loop thread")?;
    /// assert!(!notifier.notify(), "the server has stopped");
    /// # Ok::<(), wsloop::Error>(())
    /// ```
    pub fn notifier(&mut self, f: impl FnMut(&mut Ctx<'_>) + Send + 'static) -> Notifier {
        let flag = Arc::new(AtomicBool::new(false));
        let n = Notifier {
            flag: Arc::downgrade(&flag),
            waker: self.core.handle.waker.clone(),
        };
        self.notified.push(Notified {
            flag,
            run: Box::new(f),
        });
        n
    }

    /// Calls the callbacks whose flag was raised since the last pass.
    pub(super) fn run_notified(&mut self) {
        for n in &mut self.notified {
            // Lowered before the call: a notify during it runs it again.
            if !n.flag.swap(false, Ordering::AcqRel) {
                continue;
            }
            let mut ctx = Ctx {
                core: &mut self.core,
            };
            if guarded("a Notifier callback", "loop", || (n.run)(&mut ctx)).is_none() {
                self.core.stats.handler_panics += 1;
            }
        }
    }

    /// Runs waiting requests, up to this pass's budget. A handle wakes the
    /// loop only when it finds the queue empty; the loop does not sleep
    /// while any remain (see `next_timeout`). Only requests queued before
    /// the pass began run in it: one that a `Handle::run` closure queues
    /// (a closure that schedules its own next step, say) waits for the
    /// next pass, after the sockets have been served.
    pub(super) fn run_commands(&mut self) {
        let mut bytes = 0;
        let queued = self.core.handle.backlog.waiting();
        for _ in 0..COMMANDS_PER_PASS.min(queued) {
            if bytes >= COMMAND_BYTES_PER_PASS {
                break;
            }
            let Ok(cmd) = self.commands.try_recv() else {
                break;
            };
            let weight = cmd.weight();
            bytes += weight;
            self.core.stats.commands += 1;
            self.core.handle.backlog.release(weight);
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
                Command::Run(f) => {
                    if guarded("a Handle::run closure", "loop", || f(&mut ctx)).is_none() {
                        self.core.stats.handler_panics += 1;
                    }
                }
                Command::Shutdown => self.begin_shutdown(),
            }
        }
    }

    /// Starts draining: sessions stop at once (the listener stays open,
    /// and whatever asks for a new one is answered 503 with Retry-After,
    /// the readiness endpoint included), every open connection gets what
    /// is queued for it and then close 1001, and the loop ends once none
    /// is left or the deadline passes (see `Server::turn`).
    pub(super) fn begin_shutdown(&mut self) {
        if self.core.shutdown_at.is_some() {
            return;
        }
        let now = self.core.now;
        info!(
            "graceful shutdown: closing {} connections within {:?}; new sessions get 503",
            self.core.open, self.core.config.shutdown_timeout
        );
        let deadline = now + self.core.config.shutdown_timeout;
        self.core.shutdown_at = Some(deadline);
        let (handler, core) = (&mut self.handler, &mut self.core);
        if guarded("on_shutdown", "loop", || {
            handler.on_shutdown(&mut Ctx { core })
        })
        .is_none()
        {
            self.core.stats.handler_panics += 1;
        }
        let keys: Vec<usize> = self.core.slab.iter().map(|(k, _)| k).collect();
        let (code, reason) = handler::SHUTDOWN_CLOSE;
        let refusal = ops::draining();
        for key in keys {
            let e = &mut self.core.slab[key];
            if e.dead {
                continue;
            }
            match &mut e.phase {
                Phase::Open { conn, .. } => {
                    // Queued after everything already queued: nothing
                    // accepted before the signal is lost.
                    conn.close_until(code, reason, deadline);
                    self.core.mark_dirty(key);
                }
                Phase::Handshake { .. } => {
                    // Its request may never be finished: answer now.
                    respond(&mut self.core, key, &refusal, false);
                }
                Phase::Draining { .. } => {}
            }
        }
        // Readiness turns at once for scrapes too.
        ops::publish(&mut self.core, &self.handler);
    }
}
