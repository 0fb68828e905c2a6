//! An in-process [`Server`] on its own thread, and `Recorder`, an echo
//! handler that records what happened.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use wsloop::server::{ConnId, Ctx, Handle, Handler, Server};
use wsloop::{CloseInfo, Config, Message};

/// A [`Server`] running on its own thread.
pub struct ServerThread<H: Handler + Send + 'static> {
    pub addr: SocketAddr,
    pub handle: Handle,
    pub thread: Option<JoinHandle<H>>,
}

/// Binds 127.0.0.1:0 with `config` and runs `handler` on a new thread.
pub fn start_server<H: Handler + Send + 'static>(config: Config, handler: H) -> ServerThread<H> {
    spawn_server(loopback(), config, handler, |s| s)
}

/// Like [`start_server`], on a given address (to restart a server on the
/// same port).
pub fn start_server_at<H: Handler + Send + 'static>(
    addr: SocketAddr,
    config: Config,
    handler: H,
) -> ServerThread<H> {
    spawn_server(addr, config, handler, |s| s)
}

/// 127.0.0.1 on a port the system picks.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Binds `addr` with `config`, passes the server through `setup` (to add
/// TLS, say) and runs it on a new thread; panics if it cannot bind.
pub fn spawn_server<H: Handler + Send + 'static>(
    addr: SocketAddr,
    config: Config,
    handler: H,
    setup: impl FnOnce(Server<H>) -> Server<H> + Send + 'static,
) -> ServerThread<H> {
    let (tx, rx) = mpsc::channel();
    let thread = thread::Builder::new()
        .name("wsloop-server".into())
        .spawn(move || {
            let server = match Server::bind(addr, config, handler) {
                Ok(s) => setup(s),
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    panic!("bind {addr}: {e}");
                }
            };
            tx.send(Ok((server.local_addr(), server.handle()))).unwrap();
            server.run().expect("server run")
        })
        .unwrap();
    let (addr, handle) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server thread did not start")
        .unwrap_or_else(|e| panic!("server did not bind: {e}"));
    ServerThread {
        addr,
        handle,
        thread: Some(thread),
    }
}

impl<H: Handler + Send + 'static> ServerThread<H> {
    /// Graceful shutdown; returns the handler. Panics if the loop does not
    /// stop within `within`.
    pub fn stop(mut self, within: Duration) -> H {
        self.handle.shutdown().expect("shutdown");
        let t = self.thread.take().unwrap();
        let start = Instant::now();
        while !t.is_finished() {
            assert!(
                start.elapsed() < within,
                "server did not stop within {within:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
        t.join().expect("server thread panicked")
    }
}

impl<H: Handler + Send + 'static> Drop for ServerThread<H> {
    fn drop(&mut self) {
        // Ask it to stop but do not wait: a failing test must not hang.
        if self.thread.is_some() {
            let _ = self.handle.shutdown();
        }
    }
}

/// An in-process echo server handler that records what happened: opens,
/// messages, and every `on_close` with its info.
#[derive(Default, Clone)]
pub struct Recorder {
    pub opened: Arc<AtomicUsize>,
    pub messages: Arc<AtomicUsize>,
    pub closes: Arc<Mutex<Vec<CloseInfo>>>,
}

impl Recorder {
    pub fn closes(&self) -> Vec<CloseInfo> {
        self.closes.lock().unwrap().clone()
    }
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }
    pub fn messages(&self) -> usize {
        self.messages.load(Ordering::SeqCst)
    }
}

impl Handler for Recorder {
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId) {
        self.opened.fetch_add(1, Ordering::SeqCst);
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        self.messages.fetch_add(1, Ordering::SeqCst);
        let _ = ctx.send(id, msg);
    }
    fn on_close(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, info: &CloseInfo) {
        self.closes.lock().unwrap().push(info.clone());
    }
}
