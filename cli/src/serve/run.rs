//! Running `wsloop serve`: the listeners, the event loops (one, or one
//! per `--threads`), the signals that drain them, and the metrics
//! listener.

use log::{error, info};
use wsloop::handshake::Request;
use wsloop::server::{
    http_common, Access, ConnId, Ctx, Handle, Handler, HttpResponse, Metrics, Server, Upgrade,
};
use wsloop::{Config, Message};

use super::listen;
use super::{App, Options, TlsSetting};

/// The echo application.
pub struct Echo {
    pub access: Access,
}

impl Handler for Echo {
    fn on_upgrade(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, req: &Request) -> Upgrade {
        self.access.check(req).unwrap_or_else(Upgrade::accept)
    }

    fn on_http(&mut self, req: &Request) -> HttpResponse {
        http_common(req)
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        let _ = ctx.send(id, msg);
    }
}

/// Starts a thread that turns SIGTERM/SIGINT into a graceful shutdown; a
/// second signal exits at once.
pub fn shutdown_on_signals(handles: Vec<Handle>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot install signal handlers: {e}");
            return;
        }
    };
    std::thread::spawn(move || {
        let mut seen = 0;
        for sig in signals.forever() {
            seen += 1;
            if seen > 1 {
                // As a shell reports a death by signal: 128 + its number.
                error!("second signal {sig}: exiting now");
                std::process::exit(128 + sig);
            }
            info!("signal {sig}: draining (a second signal exits at once)");
            for h in &handles {
                let _ = h.shutdown();
            }
        }
    });
}

/// What every event loop of the process gets besides its handler.
struct Setup {
    config: Config,
    tls: TlsSetting,
    /// Where the loops publish (with `--metrics` or `--metrics-addr`).
    metrics: Option<Metrics>,
    /// `--metrics`: `/metrics` on the main port, behind the token if any.
    metrics_here: Option<Option<String>>,
}

impl Setup {
    fn server<H: Handler>(&self, listener: std::net::TcpListener, handler: H) -> Server<H> {
        let server = Server::from_listener(
            mio::net::TcpListener::from_std(listener),
            self.config.clone(),
            handler,
        );
        let server = match server {
            Ok(s) => s,
            // The config was validated when the options were parsed and the
            // listener is bound: only a failing epoll could get here.
            Err(e) => {
                eprintln!("wsloop serve: cannot start an event loop: {e}");
                std::process::exit(1);
            }
        };
        let mut server = secure(server, &self.tls).serve_readiness("/readyz");
        if let Some(m) = &self.metrics {
            server = server.with_metrics(m);
        }
        if let Some(token) = &self.metrics_here {
            server = server.serve_metrics("/metrics", token.clone());
        }
        server
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "wss"
        } else {
            "ws"
        }
    }
}

pub fn run(opts: Options) -> i32 {
    if opts.redis_ignored {
        log::warn!(
            "REDIS_URL is set but this wsloop was built without the `redis` feature: \
             rooms stay in this process"
        );
    }
    let listeners = match listen::bind(&opts.addr, opts.backlog, opts.threads) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("wsloop serve: cannot listen on {}: {e}", opts.addr);
            return 1;
        }
    };
    let metrics = (opts.metrics || opts.metrics_addr.is_some()).then(Metrics::new);
    if let (Some(addr), Some(m)) = (&opts.metrics_addr, &metrics) {
        if let Err(code) = serve_metrics_apart(addr, m.clone()) {
            return code;
        }
    }
    let setup = Setup {
        config: opts.config,
        tls: opts.tls,
        metrics,
        metrics_here: opts.metrics.then(|| opts.access.token.clone()),
    };
    if opts.threads > 1 {
        return match opts.app {
            App::Echo => serve_threads(listeners, &setup, |_| Echo {
                access: opts.access.clone(),
            }),
            App::Chat => {
                // One numbering and history for every loop (--redis with
                // --threads was refused when the options were parsed).
                let hub = wsloop_chat::Hub::new(&opts.chat);
                // Server i's bus number, as the hub gave it.
                let numbers = std::cell::RefCell::new(Vec::new());
                serve_threads_with(
                    listeners,
                    &setup,
                    |_| {
                        let bus = hub.bus();
                        numbers.borrow_mut().push(bus.loop_no());
                        wsloop_chat::Chat::with_bus(opts.access.clone(), bus)
                            .config(opts.chat.clone())
                    },
                    |i, server| hub.attach(numbers.borrow()[i], server),
                )
            }
        };
    }
    let listener = listeners.into_iter().next().expect("one listener");
    match opts.app {
        App::Echo => serve(
            setup.server(
                listener,
                Echo {
                    access: opts.access,
                },
            ),
            setup.scheme(),
            |_| Ok(()),
            |_| (),
        ),
        #[cfg(feature = "redis")]
        App::Chat if opts.redis.is_some() => {
            let url = opts.redis.as_deref().unwrap_or_default();
            let (bus, starter) = match wsloop_chat::RedisBus::with_config(url, &opts.chat) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("wsloop serve: --redis: {e}");
                    return 2;
                }
            };
            let flush_within = setup.config.shutdown_timeout;
            serve(
                setup.server(
                    listener,
                    wsloop_chat::Chat::with_bus(opts.access, bus).config(opts.chat),
                ),
                setup.scheme(),
                // The threads need the loop's handle: started once bound.
                move |handle| starter.start(handle),
                // Queued messages reach Redis before the process exits,
                // within the shutdown deadline.
                move |chat| {
                    chat.bus().flush(flush_within);
                },
            )
        }
        App::Chat => serve(
            setup.server(
                listener,
                wsloop_chat::Chat::with_config(opts.access, opts.chat),
            ),
            setup.scheme(),
            |_| Ok(()),
            |_| (),
        ),
    }
}

/// Calls `started` with the loop's handle (to start helper threads such
/// as the Redis backplane's), runs until shutdown, then `finished` with
/// the handler (to flush what it still holds).
fn serve<H: Handler>(
    server: Server<H>,
    scheme: &str,
    started: impl FnOnce(Handle) -> std::io::Result<()>,
    finished: impl FnOnce(H),
) -> i32 {
    info!("listening on {scheme}://{}", server.local_addr());
    if let Err(e) = started(server.handle()) {
        eprintln!("wsloop serve: cannot start: {e}");
        return 1;
    }
    shutdown_on_signals(vec![server.handle()]);
    match server.run() {
        Ok(handler) => {
            finished(handler);
            0
        }
        Err(e) => {
            error!("server failed: {e}");
            1
        }
    }
}

/// `server` with TLS on if it is configured.
fn secure<H: Handler>(server: Server<H>, tls: &TlsSetting) -> Server<H> {
    match tls {
        #[cfg(feature = "tls")]
        Some(cfg) => server.with_tls(cfg.clone()),
        #[cfg(not(feature = "tls"))]
        Some(never) => match *never {},
        None => server,
    }
}

/// `--threads N`: N event loops on N threads, each with its own
/// listening socket on the same port (SO_REUSEPORT), so the kernel spreads
/// new connections over them; a connection stays on the loop that
/// accepted it. `app(i)` makes loop `i`'s handler.
fn serve_threads<H: Handler + Send + 'static>(
    listeners: Vec<std::net::TcpListener>,
    setup: &Setup,
    app: impl FnMut(usize) -> H,
) -> i32 {
    serve_threads_with(listeners, setup, app, |_, _| {})
}

/// [`serve_threads`], calling `started(i, handle)` for each loop before
/// any runs.
fn serve_threads_with<H: Handler + Send + 'static>(
    listeners: Vec<std::net::TcpListener>,
    setup: &Setup,
    mut app: impl FnMut(usize) -> H,
    mut started: impl FnMut(usize, &mut Server<H>),
) -> i32 {
    let mut servers: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| setup.server(l, app(i)))
        .collect();
    for (i, s) in servers.iter_mut().enumerate() {
        started(i, s);
    }
    info!(
        "listening on {}://{} with {} event loops",
        setup.scheme(),
        servers[0].local_addr(),
        servers.len()
    );
    shutdown_on_signals(servers.iter().map(|s| s.handle()).collect());
    let loops: Vec<_> = servers
        .into_iter()
        .enumerate()
        .map(|(i, server)| {
            std::thread::Builder::new()
                .name(format!("loop-{i}"))
                .spawn(move || server.run().map(|_| ()))
        })
        .collect();
    let mut code = 0;
    for (i, l) in loops.into_iter().enumerate() {
        let result = match l {
            Ok(handle) => handle.join().unwrap_or_else(|_| {
                Err(wsloop::Error::Io(std::io::Error::other("thread panicked")))
            }),
            Err(e) => Err(wsloop::Error::from(e)),
        };
        if let Err(e) = result {
            error!("event loop {i} failed: {e}");
            code = 1;
        }
    }
    code
}

/// `--metrics-addr`: `GET /metrics` on a listener of its own, served by a
/// small loop on its own thread. Plain HTTP without a token: bind it to a
/// private address. It reads what the loops published (at most about a
/// second old) and lives until the process exits.
fn serve_metrics_apart(addr: &str, metrics: Metrics) -> Result<(), i32> {
    let server = match Server::bind(addr, Config::default(), MetricsOnly { metrics }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wsloop serve: cannot listen on {addr} (--metrics-addr): {e}");
            return Err(1);
        }
    };
    info!("metrics on http://{}/metrics", server.local_addr());
    let started = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            if let Err(e) = server.run() {
                error!("metrics listener failed: {e}");
            }
        });
    started.map(|_| ()).map_err(|e| {
        eprintln!("wsloop serve: cannot start the metrics thread: {e}");
        1
    })
}

/// The handler of the `--metrics-addr` listener.
struct MetricsOnly {
    metrics: Metrics,
}

impl Handler for MetricsOnly {
    fn on_upgrade(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, _req: &Request) -> Upgrade {
        Upgrade::reject(404, "this port serves GET /metrics only")
    }

    fn on_http(&mut self, req: &Request) -> HttpResponse {
        match (req.method.as_str(), req.path()) {
            ("GET" | "HEAD", "/metrics") => HttpResponse::with_type(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            (_, "/metrics") => {
                let mut r = HttpResponse::text(405, "use GET\n");
                r.headers.push(("Allow".into(), "GET, HEAD".into()));
                r
            }
            _ => HttpResponse::text(404, "this port serves GET /metrics only\n"),
        }
    }

    fn on_message(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, _msg: Message<'_>) {}
}
