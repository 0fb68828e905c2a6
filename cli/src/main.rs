//! The `wsloop` command: `serve` (echo, or the chat of `wsloop-chat`),
//! `client` (stdin lines out, messages to stdout) and `bench` (the load
//! generator of `wsloop-bench`). Argument parsing, signals and logging live
//! here; everything else is in the library crates.
//!
//! ```text
//!  argv ──► main: the subcommand ──► args::Args (flags, sizes, durations)
//!   serve  ──► serve::parse → Options (Config, Access, TLS, app)
//!              ──► serve::run: listeners (serve/listen.rs: --backlog, one per
//!                  --threads loop with SO_REUSEPORT) → wsloop::server::Server
//!                  running the echo handler or wsloop_chat::Chat (LocalBus, or
//!                  RedisBus with --redis, readiness from its link), /readyz and
//!                  /metrics on the port or --metrics-addr; a signal thread →
//!                  Handle::shutdown (drain), a second signal → exit 128+sig
//!   client ──► client::parse → a wsloop::client::Client on its own mio Poll;
//!              a stdin thread feeds it lines through a Waker, messages go to stdout
//!   bench  ──► bench::parse → wsloop_bench::Options ──► wsloop_bench::run
//! ```
//!
//! ```text
//! $ cargo run --release -- serve                 # echo on 0.0.0.0:$PORT (default 10000)
//! $ wsloop serve --app chat --addr 127.0.0.1:8080
//! $ wsloop client ws://127.0.0.1:10000/
//! $ wsloop bench ws://127.0.0.1:10000/ --conns 100 --pipeline 16 --size 32
//! ```
//!
//! Each subcommand's `--help` lists its flags; `docs/CLI.md` is the tour.

mod args;
mod bench;
mod client;
mod serve;

use args::Args;

const HELP: &str = "\
wsloop: an RFC 6455 WebSocket server and client on mio

USAGE:
    wsloop serve [OPTIONS]     echo server, or chat with --app chat (see --help)
    wsloop client URL          stdin to messages, messages to stdout
    wsloop bench URL           load generator (see wsloop bench --help)
    wsloop --version

Logs go to stderr; RUST_LOG sets the level (default info).";

/// Logs to stderr at the level RUST_LOG sets (default info).
fn init_logs(format: serve::LogFormat) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == serve::LogFormat::Json {
        b.format(|buf, record| {
            use std::io::Write;
            // Fields in reading order; serde_json escapes the strings.
            let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
            writeln!(
                buf,
                "{{\"ts\":\"{}\",\"level\":\"{}\",\"target\":{},\"msg\":{}}}",
                buf.timestamp_millis(),
                record.level(),
                q(record.target()),
                q(&record.args().to_string())
            )
        });
    }
    b.init();
}

fn main() {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        eprintln!("{HELP}");
        std::process::exit(2);
    }
    let cmd = argv.remove(0);
    if cmd != "serve" {
        init_logs(serve::LogFormat::Text);
    }
    let code = match cmd.as_str() {
        "serve" => match serve::parse(Args::new("serve", argv)) {
            Ok(Some(opts)) => {
                init_logs(opts.log_format);
                serve::run(opts)
            }
            Ok(None) => 0,
            Err(e) => {
                eprintln!("{e}");
                2
            }
        },
        "client" => match client::parse(Args::new("client", argv)) {
            Ok(Some(opts)) => client::run(opts),
            Ok(None) => 0,
            Err(e) => {
                eprintln!("{e}");
                2
            }
        },
        "bench" => match bench::parse(Args::new("bench", argv)) {
            Ok(Some(opts)) => wsloop_bench::run(opts),
            Ok(None) => 0,
            Err(e) => {
                eprintln!("{e}");
                2
            }
        },
        "-h" | "--help" | "help" => {
            println!("{HELP}");
            0
        }
        "-V" | "--version" => {
            println!("wsloop {}", env!("CARGO_PKG_VERSION"));
            0
        }
        other => {
            eprintln!("wsloop: unknown command '{other}' (try: serve, client, bench, --help)");
            2
        }
    };
    std::process::exit(code);
}
