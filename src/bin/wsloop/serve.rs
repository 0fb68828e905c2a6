//! `wsloop serve`: the echo server, with a health check on the same port.

use log::{error, info};
use wsloop::handshake::Request;
use wsloop::server::{ConnId, Ctx, Handler, HttpResponse, Server};
use wsloop::{Config, Message, OverflowPolicy};

use crate::args::{Arg, ArgError, Args};

const HELP: &str = "\
wsloop serve: a WebSocket echo server with an HTTP health check

USAGE:
    wsloop serve [OPTIONS]

Every text or binary message is sent back unchanged; the upgrade is
accepted on any path. Plain HTTP on the same port: GET /healthz answers
200 'ok'; any other plain request gets 426 Upgrade Required.
SIGTERM or SIGINT starts a graceful shutdown: stop accepting, send close
1001 to every connection after what is queued for it, wait for replies up
to --shutdown-timeout, exit 0. A second signal exits at once.

OPTIONS:
    --addr HOST:PORT         Listen address [default: 0.0.0.0:$PORT, PORT
                             from the environment, else 10000]
    --max-message SIZE       Largest message accepted or sent [default: 16M]
    --max-frame SIZE         Largest frame accepted [default: 16M]
    --max-connections N      Above N connections, answer 503 [default: none]
    --handshake-timeout DUR  Time allowed for the upgrade request [default: 10s]
    --idle-timeout DUR       Close after receiving nothing this long; 0 = off
                             [default: 300s]
    --ping-interval DUR      Ping after this long without input; 0 = off
                             [default: 30s]
    --pong-timeout DUR       Drop a peer whose pong is this late [default: 20s]
    --close-timeout DUR      Wait this long for the peer's close [default: 5s]
    --shutdown-timeout DUR   Longest graceful shutdown [default: 30s]
    --write-high SIZE        Stop reading a peer whose queue passes this
                             [default: 1M]
    --write-limit SIZE       Past this queue size apply --overflow
                             [default: 32M]
    --overflow POLICY        close (1008), close-1013, or drop [default: close]
    -h, --help               Print this help

SIZE is bytes or a number with K, M or G (64K, 16M). DUR is seconds or a
number with ms, s or m (500ms, 30s, 5m). Logs go to stderr; set RUST_LOG
(e.g. RUST_LOG=debug) for one line per connection.";

pub struct Options {
    pub addr: String,
    pub config: Config,
}

pub fn parse(mut args: Args) -> Result<Option<Options>, ArgError> {
    let port = match std::env::var("PORT") {
        Ok(p) => p.parse::<u16>().map_err(|_| {
            ArgError(format!(
                "wsloop serve: invalid PORT '{p}' in the environment: expected a port number"
            ))
        })?,
        Err(_) => 10000,
    };
    let mut opts = Options {
        addr: format!("0.0.0.0:{port}"),
        config: Config::default(),
    };
    let c = &mut opts.config;
    while let Some(arg) = args.next() {
        let flag = match arg {
            Arg::Flag(f) => f,
            Arg::Positional(p) => return Err(args.unknown(&p)),
        };
        match flag.as_str() {
            "help" => {
                println!("{HELP}");
                return Ok(None);
            }
            "addr" => {
                let v = args.value("addr")?;
                if v.rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    return Err(args.bad("addr", &v, "HOST:PORT"));
                }
                opts.addr = v;
            }
            "max-message" => c.max_message_size = args.size("max-message")?,
            "max-frame" => c.max_frame_size = args.size("max-frame")?,
            "max-connections" => c.max_connections = Some(args.num("max-connections")?),
            "handshake-timeout" => {
                c.handshake_timeout = args
                    .duration("handshake-timeout", false)?
                    .unwrap_or_default()
            }
            "idle-timeout" => c.idle_timeout = args.duration("idle-timeout", true)?,
            "ping-interval" => c.ping_interval = args.duration("ping-interval", true)?,
            "pong-timeout" => {
                c.pong_timeout = args.duration("pong-timeout", false)?.unwrap_or_default()
            }
            "close-timeout" => {
                c.close_timeout = args.duration("close-timeout", false)?.unwrap_or_default()
            }
            "shutdown-timeout" => {
                c.shutdown_timeout = args
                    .duration("shutdown-timeout", false)?
                    .unwrap_or_default()
            }
            "write-high" => {
                c.write_buffer_high = args.size("write-high")?;
                c.write_buffer_low = c.write_buffer_low.min(c.write_buffer_high / 4);
            }
            "write-limit" => c.write_buffer_limit = args.size("write-limit")?,
            "overflow" => {
                let v = args.value("overflow")?;
                c.overflow = match v.as_str() {
                    "close" => OverflowPolicy::Close(wsloop::CloseCode::POLICY),
                    "close-1013" => OverflowPolicy::Close(wsloop::CloseCode::TRY_AGAIN),
                    "drop" => OverflowPolicy::Drop,
                    _ => return Err(args.bad("overflow", &v, "close, close-1013 or drop")),
                };
            }
            other => return Err(args.unknown(&format!("--{other}"))),
        }
    }
    if c.max_frame_size > c.max_message_size {
        c.max_frame_size = c.max_message_size;
    }
    if let Err(e) = opts.config.validate() {
        return Err(ArgError(format!("wsloop serve: {e}")));
    }
    Ok(Some(opts))
}

/// The echo application.
pub struct Echo;

/// Answers plain HTTP requests the same way for every app.
pub fn http_common(req: &Request) -> HttpResponse {
    match (req.method.as_str(), req.path()) {
        ("GET" | "HEAD", "/healthz") => HttpResponse::text(200, "ok\n"),
        (_, "/healthz") => HttpResponse::text(405, "use GET\n"),
        _ => {
            let mut r = HttpResponse::text(
                426,
                "this is a WebSocket endpoint; GET /healthz for health\n",
            );
            r.headers.push(("Upgrade".into(), "websocket".into()));
            r.headers
                .push(("Sec-WebSocket-Version".into(), "13".into()));
            r
        }
    }
}

impl Handler for Echo {
    fn on_http(&mut self, req: &Request) -> HttpResponse {
        http_common(req)
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        let _ = ctx.send(id, msg);
    }
}

/// Starts a thread that turns SIGTERM/SIGINT into a graceful shutdown; a
/// second signal exits at once.
pub fn shutdown_on_signals(handle: wsloop::server::Handle) {
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
                error!("second signal {sig}: exiting now");
                std::process::exit(130);
            }
            info!("signal {sig}: graceful shutdown");
            let _ = handle.shutdown();
        }
    });
}

pub fn run(opts: Options) -> i32 {
    let server = match Server::bind(opts.addr.as_str(), opts.config, Echo) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wsloop serve: cannot listen on {}: {e}", opts.addr);
            return 1;
        }
    };
    info!("listening on ws://{}", server.local_addr());
    shutdown_on_signals(server.handle());
    match server.run() {
        Ok(_) => 0,
        Err(e) => {
            error!("server failed: {e}");
            1
        }
    }
}
