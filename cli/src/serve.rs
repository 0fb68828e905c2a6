//! `wsloop serve`: the echo server (or, with `--app chat`, the chat), with
//! health, readiness and metrics on the same port. This file parses the
//! options; `run` runs them.

mod listen;
mod run;

use wsloop::config::TrustedProxy;
use wsloop::server::{Access, OriginAllowList};
use wsloop::{Config, OverflowPolicy, RateAction, RateLimit};

use crate::args::{env_var, Arg, ArgError, Args, EnvKind};

pub use run::run;

const HELP: &str = "\
wsloop serve: a WebSocket echo server (or chat) with an HTTP health check

USAGE:
    wsloop serve [OPTIONS]

--app echo (the default): every text or binary message is sent back
unchanged; the upgrade is accepted on any path. Plain HTTP on the same
port: GET /healthz answers 200 'ok'; any other plain request gets 426
Upgrade Required.
--app chat: rooms over JSON text messages at ws://HOST:PORT/ws, with
replay after reconnects; GET / is a demo page, GET /healthz as above.
Client to server: {\"type\":\"join\",\"room\":R[,\"since\":N]}, {\"type\":\"leave\",
\"room\":R}, {\"type\":\"message\",\"room\":R,\"text\":T}, {\"type\":\"broadcast\",
\"text\":T}. The server keeps the last 1000 messages of each room, numbered
by \"seq\"; see docs/CHAT.md. With --redis, several servers
share rooms, numbering and history through Redis.
GET /readyz answers 200 'ready' while the server takes new sessions,
503 while it drains (and, chat with --redis, while the Redis link is down).
SIGTERM or SIGINT drains: at once /readyz and new upgrades get 503 (with
Retry-After); every connection gets what is queued for it, then close
1001; exit 0 once all have closed or --shutdown-timeout has passed. A
second signal exits at once with 128 + the signal.

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
    --shutdown-timeout DUR   Longest graceful shutdown [default: 25s, inside
                             the 30 s platforms such as Heroku allow between
                             SIGTERM and SIGKILL]
    --write-high SIZE        Stop reading a peer whose queue passes this
                             [default: 1M]
    --write-limit SIZE       Past this queue size apply --overflow
                             [default: 32M]
    --overflow POLICY        close (1008), close-1013, or drop [default: close]
    --deflate                Offer permessage-deflate (RFC 7692) to clients
                             that ask for it (needs the `deflate` feature)
    --deflate-no-context     Reset compression after every message both
                             ways: less memory per connection, less ratio
    --tls-cert FILE          Serve wss:// (and HTTPS) with this PEM
                             certificate chain (needs the `tls` feature)
    --tls-key FILE           The PEM private key for --tls-cert
    --app APP                echo or chat [default: echo]
    --threads N              N event loops, each on its own thread with its
                             own listening socket on the port (SO_REUSEPORT:
                             the kernel spreads new connections; a
                             connection stays on the loop that accepted
                             it). The chat's rooms span the loops: one
                             numbering and history, each message encoded
                             once (not with --redis) [default: 1]
    --redis URL              Chat only: share rooms with every server using
                             this Redis (redis://[:PASSWORD@]HOST:PORT[/DB],
                             or rediss:// for TLS, the server verified);
                             history is kept there (needs the `redis`
                             feature) [default: none, one process]
    --chat-max-input SIZE    Chat only: longest client message, checked
                             before parsing (an error answers a longer one)
                             [default: 16K]
    --no-broadcast           Chat only: refuse \"broadcast\" (to everyone)
    --history N              Chat only: messages kept per room [default: 1000]
    --max-rooms N            Chat only: rooms with history, in memory; with
                             --redis, rooms this server may use within the
                             history's 24 h lifetime [default: 1024]
    --redis-queue SIZE       Chat with --redis: messages waiting for Redis;
                             past this a sender gets an error to retry
                             [default: 16M]
    --token SECRET           Upgrades need ?token=SECRET or 'Authorization:
                             Bearer SECRET', else 401 [default: none]. Prefer
                             WSLOOP_TOKEN or --token-file: a flag is visible
                             to every user in /proc/PID/cmdline
    --token-file FILE        Read the token from FILE (one line)
    --allowed-origin ORIGIN  Accept browser upgrades only from this Origin
                             (scheme://host[:port]; repeatable), else 403.
                             Requests without Origin are allowed
                             [default: any origin]
    --rate-messages N        Per connection: at most N messages a second
                             (bursts of N) [default: no limit]
    --rate-bytes SIZE        Per connection: at most SIZE payload bytes a
                             second (bursts of SIZE) [default: no limit]
    --rate-action ACTION     Over the rate: close (1008 'rate limit exceeded')
                             or drop the message [default: close]
    --log-format FORMAT      text, or json: one JSON object per line with
                             ts, level, target and msg [default: text]
    --metrics                Serve GET /metrics (Prometheus text) on this
                             port; with a token it needs 'Authorization:
                             Bearer TOKEN' [default: off]
    --metrics-addr HOST:PORT Serve GET /metrics on a listener of its own,
                             plain HTTP without a token: keep it private
                             [default: none]
    --trust-proxy ADDR       A proxy in front (an address or a range such as
                             10.0.0.0/8; repeatable): for requests from it,
                             the client address is the last X-Forwarded-For
                             entry that is not a trusted proxy
                             [default: none, the header is ignored]
    --backlog N              Connections the kernel queues before they are
                             accepted (capped by net.core.somaxconn)
                             [default: 1024]
    --check                  Check the options (environment included; TLS
                             files are loaded) and exit: 0 if they are good
    -h, --help               Print this help

SIZE is bytes or a number with K, M or G (64K, 16M). DUR is seconds or a
number with ms, s or m (500ms, 30s, 5m). Logs go to stderr; set RUST_LOG
(e.g. RUST_LOG=debug) for a line as each connection opens and closes;
refusals are logged at info, errors at warn.

ENVIRONMENT:
Every option can also be set as WSLOOP_ and its name in capitals with _
for - (a flag on the command line wins):";

/// The tail of the help: each option's variable (made from [`ENV`], so the
/// two never disagree), then the platform variables.
fn help() -> String {
    let mut h = String::from(HELP);
    for (flag, kind) in ENV {
        let example = match kind {
            EnvKind::Value => "VALUE",
            EnvKind::Switch => "1",
            EnvKind::List => "A,B",
        };
        h.push_str(&format!(
            "\n    {:<33}--{flag}",
            format!("{}={example}", env_var(flag))
        ));
    }
    h.push_str(
        "\n    PORT=N                           the port of the default --addr\n    \
         REDIS_URL=URL                    --redis for --app chat, as Heroku and Render set it",
    );
    h
}

/// The options `serve` also reads from the environment.
const ENV: &[(&str, EnvKind)] = &[
    ("addr", EnvKind::Value),
    ("app", EnvKind::Value),
    ("max-message", EnvKind::Value),
    ("max-frame", EnvKind::Value),
    ("max-connections", EnvKind::Value),
    ("handshake-timeout", EnvKind::Value),
    ("idle-timeout", EnvKind::Value),
    ("ping-interval", EnvKind::Value),
    ("pong-timeout", EnvKind::Value),
    ("close-timeout", EnvKind::Value),
    ("shutdown-timeout", EnvKind::Value),
    ("write-high", EnvKind::Value),
    ("write-limit", EnvKind::Value),
    ("overflow", EnvKind::Value),
    ("deflate", EnvKind::Switch),
    ("deflate-no-context", EnvKind::Switch),
    ("tls-cert", EnvKind::Value),
    ("tls-key", EnvKind::Value),
    ("threads", EnvKind::Value),
    ("redis", EnvKind::Value),
    ("chat-max-input", EnvKind::Value),
    ("no-broadcast", EnvKind::Switch),
    ("history", EnvKind::Value),
    ("max-rooms", EnvKind::Value),
    ("redis-queue", EnvKind::Value),
    ("token", EnvKind::Value),
    ("token-file", EnvKind::Value),
    ("allowed-origin", EnvKind::List),
    ("rate-messages", EnvKind::Value),
    ("rate-bytes", EnvKind::Value),
    ("rate-action", EnvKind::Value),
    ("log-format", EnvKind::Value),
    ("metrics", EnvKind::Switch),
    ("metrics-addr", EnvKind::Value),
    ("trust-proxy", EnvKind::List),
    ("backlog", EnvKind::Value),
];

pub struct Options {
    pub addr: String,
    pub config: Config,
    pub app: App,
    pub access: Access,
    pub tls: TlsSetting,
    /// `--redis URL` (only accepted when built with the `redis` feature).
    pub redis: Option<String>,
    /// The chat's own limits (`--chat-max-input`, `--no-broadcast`,
    /// `--history`, `--max-rooms`).
    pub chat: wsloop_chat::ChatConfig,
    /// `--threads N`: event loops, one listener each.
    pub threads: usize,
    /// `--log-format`: text (people) or json (one object per line).
    pub log_format: LogFormat,
    /// `REDIS_URL` is set but this build has no Redis support.
    #[cfg_attr(feature = "redis", allow(dead_code))]
    pub redis_ignored: bool,
    /// `--metrics`: `/metrics` on the main port.
    pub metrics: bool,
    /// `--metrics-addr`: `/metrics` on a listener of its own.
    pub metrics_addr: Option<String>,
    /// `--backlog`: the listen queue.
    pub backlog: u32,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `[time LEVEL target] message`.
    Text,
    /// One JSON object per line: `ts`, `level`, `target`, `msg`.
    Json,
}

/// The loaded TLS configuration (`--tls-cert`/`--tls-key`).
#[cfg(feature = "tls")]
pub type TlsSetting = Option<std::sync::Arc<rustls::ServerConfig>>;
/// Without the `tls` feature there is nothing to hold.
#[cfg(not(feature = "tls"))]
pub type TlsSetting = Option<std::convert::Infallible>;

/// Which application `serve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    Echo,
    Chat,
}

pub fn parse(args: Args) -> Result<Option<Options>, ArgError> {
    let mut args = args.with_env(ENV, |k| std::env::var(k).ok())?;
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
        app: App::Echo,
        access: Access::default(),
        tls: None,
        redis: None,
        chat: wsloop_chat::ChatConfig::default(),
        threads: 1,
        log_format: LogFormat::Text,
        redis_ignored: false,
        metrics: false,
        metrics_addr: None,
        backlog: DEFAULT_BACKLOG,
    };
    let mut tls_cert: Option<String> = None;
    let mut tls_key: Option<String> = None;
    let mut origins: Vec<String> = Vec::new();
    let mut rate_messages: Option<f64> = None;
    let mut rate_bytes: Option<usize> = None;
    let mut rate_action: Option<RateAction> = None;
    let mut check = false;
    let c = &mut opts.config;
    while let Some(arg) = args.next() {
        let flag = match arg {
            Arg::Flag(f) => f,
            Arg::Positional(p) => return Err(args.unknown(&p)),
        };
        match flag.as_str() {
            "help" => {
                println!("{}", help());
                return Ok(None);
            }
            "check" => check = true,
            "addr" => {
                let v = args.value("addr")?;
                if !is_host_port(&v) {
                    return Err(args.bad("addr", &v, "HOST:PORT"));
                }
                opts.addr = v;
            }
            "metrics" => opts.metrics = true,
            "metrics-addr" => {
                let v = args.value("metrics-addr")?;
                if !is_host_port(&v) {
                    return Err(args.bad("metrics-addr", &v, "HOST:PORT"));
                }
                opts.metrics_addr = Some(v);
            }
            "trust-proxy" => {
                let v = args.value("trust-proxy")?;
                let proxy: TrustedProxy = v.parse().map_err(|_| {
                    args.bad(
                        "trust-proxy",
                        &v,
                        "an IP address or a CIDR range such as 10.0.0.0/8",
                    )
                })?;
                c.trusted_proxies.push(proxy);
            }
            "backlog" => match args.num("backlog")? {
                n @ 1..=65535 => opts.backlog = n as u32,
                n => {
                    return Err(ArgError(format!(
                        "wsloop serve: {} {n} is outside 1 to 65535",
                        args.name("backlog")
                    )))
                }
            },
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
            "deflate" => c.deflate.enabled = true,
            "tls-cert" => tls_cert = Some(args.value("tls-cert")?),
            "tls-key" => tls_key = Some(args.value("tls-key")?),
            "deflate-no-context" => {
                c.deflate.enabled = true;
                c.deflate.server_no_context_takeover = true;
                c.deflate.client_no_context_takeover = true;
            }
            "overflow" => {
                let v = args.value("overflow")?;
                c.overflow = match v.as_str() {
                    "close" => OverflowPolicy::Close(wsloop::CloseCode::POLICY),
                    "close-1013" => OverflowPolicy::Close(wsloop::CloseCode::TRY_AGAIN),
                    "drop" => OverflowPolicy::Drop,
                    _ => return Err(args.bad("overflow", &v, "close, close-1013 or drop")),
                };
            }
            "redis" => {
                let v = args.value("redis")?;
                #[cfg(feature = "redis")]
                if let Err(e) = wsloop_chat::RedisBus::check_url(&v) {
                    return Err(ArgError(format!(
                        "wsloop serve: invalid value '{v}' for {}: expected \
                         redis://HOST:PORT or rediss://HOST:PORT ({e})",
                        args.name("redis")
                    )));
                }
                #[cfg(not(feature = "redis"))]
                return Err(ArgError(format!(
                    "wsloop serve: {} {v}: this wsloop was built without the `redis` \
                     feature (cargo build -p wsloop-cli --features redis)",
                    args.name("redis")
                )));
                #[cfg(feature = "redis")]
                {
                    opts.redis = Some(v);
                }
            }
            "chat-max-input" => opts.chat.max_input = args.size("chat-max-input")?,
            "no-broadcast" => opts.chat.broadcast = false,
            "history" => opts.chat.history_per_room = args.num("history")?,
            "max-rooms" => opts.chat.max_rooms = args.num("max-rooms")?,
            "redis-queue" => opts.chat.redis_queue_bytes = args.size("redis-queue")?,
            "log-format" => {
                let v = args.value("log-format")?;
                opts.log_format = match v.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(args.bad("log-format", &v, "text or json")),
                };
            }
            "app" => {
                let v = args.value("app")?;
                opts.app = match v.as_str() {
                    "echo" => App::Echo,
                    "chat" => App::Chat,
                    _ => return Err(args.bad("app", &v, "echo or chat")),
                };
            }
            "token" => {
                let v = args.value("token")?;
                opts.access.token = Some(check_token(&args, "token", v)?);
            }
            "token-file" => {
                let path = args.value("token-file")?;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ArgError(format!(
                        "wsloop serve: cannot read {} '{path}': {e}",
                        args.name("token-file")
                    ))
                })?;
                // One line; editors and `echo` add a line break.
                let v = text.trim_end_matches(['\r', '\n']).to_owned();
                opts.access.token = Some(check_token(&args, "token-file", v).map_err(|_| {
                    ArgError(format!(
                        "wsloop serve: the token in {} '{path}' must be one non-empty line \
                         without spaces or control characters",
                        args.name("token-file")
                    ))
                })?);
            }
            "allowed-origin" => {
                let v = args.value("allowed-origin")?;
                if !(v.starts_with("http://") || v.starts_with("https://"))
                    || v.contains(char::is_whitespace)
                {
                    return Err(args.bad(
                        "allowed-origin",
                        &v,
                        "an origin such as https://chat.example.com or http://localhost:8080",
                    ));
                }
                origins.push(v);
            }
            "rate-messages" => {
                let v = args.value("rate-messages")?;
                match v.parse::<f64>() {
                    Ok(n) if n.is_finite() && n > 0.0 => rate_messages = Some(n),
                    _ => return Err(args.bad("rate-messages", &v, "a number of messages above 0")),
                }
            }
            "rate-bytes" => match args.size("rate-bytes")? {
                0 => {
                    return Err(ArgError(format!(
                        "wsloop serve: {} must be above 0",
                        args.name("rate-bytes")
                    )))
                }
                n => rate_bytes = Some(n),
            },
            "threads" => match args.num("threads")? {
                0 => {
                    return Err(ArgError(format!(
                        "wsloop serve: {} must be at least 1",
                        args.name("threads")
                    )))
                }
                n if n > MAX_THREADS => {
                    return Err(ArgError(format!(
                        "wsloop serve: {} {n} is above the most allowed, {MAX_THREADS}",
                        args.name("threads")
                    )))
                }
                n => opts.threads = n,
            },
            "rate-action" => {
                let v = args.value("rate-action")?;
                rate_action = Some(match v.as_str() {
                    "close" => RateAction::Close,
                    "drop" => RateAction::Drop,
                    _ => return Err(args.bad("rate-action", &v, "close or drop")),
                });
            }
            other => return Err(args.unknown(&format!("--{other}"))),
        }
    }
    if !origins.is_empty() {
        opts.access.origins = OriginAllowList::new(origins);
    }
    // A limit on one of messages and bytes leaves the other practically
    // unlimited (RateLimit needs both).
    const UNLIMITED: f64 = 1e15;
    if rate_messages.is_some() || rate_bytes.is_some() {
        let mut limit = RateLimit::new(
            rate_messages.unwrap_or(UNLIMITED),
            rate_bytes.map_or(UNLIMITED, |b| b as f64),
        );
        limit.action = rate_action.unwrap_or(RateAction::Close);
        c.rate_limit = Some(limit);
    } else if rate_action.is_some() {
        return Err(ArgError(
            "wsloop serve: --rate-action needs --rate-messages or --rate-bytes".into(),
        ));
    }
    if c.max_frame_size > c.max_message_size {
        c.max_frame_size = c.max_message_size;
    }
    if let Err(e) = opts.config.validate() {
        return Err(ArgError(format!("wsloop serve: {e}")));
    }
    if let Err(e) = opts.chat.validate() {
        return Err(ArgError(format!("wsloop serve: {e}")));
    }
    redis_from_platform(&mut opts)?;
    if opts.redis.is_some() && opts.app != App::Chat {
        return Err(ArgError(
            "wsloop serve: --redis needs --app chat (the echo app has nothing to share)".into(),
        ));
    }
    if opts.redis.is_some() && opts.threads > 1 {
        return Err(ArgError(format!(
            "wsloop serve: --threads {} with --redis is not supported: each event loop would \
             need its own Redis link; run one process per core with --redis instead",
            opts.threads
        )));
    }
    opts.tls = load_tls(tls_cert, tls_key)?;
    if check {
        println!(
            "wsloop serve: options ok ({} on {}{})",
            match opts.app {
                App::Echo => "echo",
                App::Chat => "chat",
            },
            opts.addr,
            if opts.tls.is_some() { ", TLS" } else { "" }
        );
        return Ok(None);
    }
    Ok(Some(opts))
}

/// `HOST:PORT` (resolved when bound).
fn is_host_port(v: &str) -> bool {
    v.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

/// The listen backlog: std and mio use 128, too few for a connect storm.
const DEFAULT_BACKLOG: u32 = 1024;

/// A token is one word people can type: no spaces, no control characters.
fn check_token(args: &Args, flag: &str, v: String) -> Result<String, ArgError> {
    if v.is_empty() || v.chars().any(|c| c.is_control() || c == ' ') {
        return Err(args.bad(
            flag,
            &v,
            "a non-empty secret without spaces or control characters",
        ));
    }
    Ok(v)
}

/// `REDIS_URL` (set by Heroku and Render when a Redis is attached) is the
/// chat's `--redis` unless one was given.
fn redis_from_platform(opts: &mut Options) -> Result<(), ArgError> {
    if opts.app != App::Chat || opts.redis.is_some() {
        return Ok(());
    }
    let Ok(url) = std::env::var("REDIS_URL") else {
        return Ok(());
    };
    #[cfg(feature = "redis")]
    {
        if let Err(e) = wsloop_chat::RedisBus::check_url(&url) {
            return Err(ArgError(format!(
                "wsloop serve: invalid value '{url}' for REDIS_URL: expected redis://HOST:PORT \
                 or rediss://HOST:PORT ({e})"
            )));
        }
        opts.redis = Some(url);
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        opts.redis_ignored = true;
    }
    Ok(())
}

#[cfg(feature = "tls")]
fn load_tls(cert: Option<String>, key: Option<String>) -> Result<TlsSetting, ArgError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(c), Some(k)) => wsloop::tls::server_config_from_pem(c.as_ref(), k.as_ref())
            .map(Some)
            .map_err(|e| ArgError(format!("wsloop serve: --tls-cert/--tls-key: {e}"))),
        _ => Err(ArgError(
            "wsloop serve: --tls-cert and --tls-key go together".into(),
        )),
    }
}

#[cfg(not(feature = "tls"))]
fn load_tls(cert: Option<String>, key: Option<String>) -> Result<TlsSetting, ArgError> {
    if cert.is_some() || key.is_some() {
        return Err(ArgError(
            "wsloop serve: --tls-cert/--tls-key need a build with the `tls` feature (cargo build --features tls)".into(),
        ));
    }
    Ok(None)
}

/// Most `--threads`: more loops than cores only add contention.
const MAX_THREADS: usize = 64;
