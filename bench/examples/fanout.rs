//! Fan-out benchmark for `wsloop serve --app chat` (the measurement is
//! `wsloop_bench::fanout`): N connections join one room (or, with `--mode
//! broadcast`, just listen), one more connection sends M messages, and the
//! rate at which the server delivers them is measured. Run the server and
//! this load on separate cores:
//!
//! ```sh
//! cargo build --release --bin wsloop --example fanout
//! taskset -c 0 target/release/wsloop serve --app chat --addr 127.0.0.1:9100 &
//! taskset -c 1 target/release/examples/fanout --url ws://127.0.0.1:9100/ws
//! ```
//!
//! Against `wsloop serve --app chat --threads 2` the receivers spread over
//! both loops and every publish crosses between them (one room spans the
//! loops); docs/PERFORMANCE.md has 1 and 2 loops side by side.
//!
//! Options: `--conns N` (5000), `--messages M` per run (100), `--size B`
//! text bytes per message (64), `--mode room|broadcast` (room), `--runs R`
//! (3; the median is reported with min and max). Each receiver uses one
//! file descriptor: keep N below the open-file limit (20,000 here).
//! `FANOUT_WAVE` (100) connections are opened at a time; `FANOUT_DEBUG`
//! reports each wave.

use wsloop_bench::fanout::{run, Options};

fn parse_args() -> Options {
    let mut o = Options {
        wave: std::env::var("FANOUT_WAVE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100),
        debug: std::env::var_os("FANOUT_DEBUG").is_some(),
        ..Options::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        let num = |v: String| -> usize {
            v.parse()
                .unwrap_or_else(|_| die(&format!("bad number '{v}'")))
        };
        match a.as_str() {
            "--url" => o.url = val(),
            "--conns" => o.conns = num(val()),
            "--messages" => o.messages = num(val()),
            "--size" => o.size = num(val()),
            "--runs" => o.runs = num(val()).max(1),
            "--mode" => {
                o.broadcast = match val().as_str() {
                    "room" => false,
                    "broadcast" => true,
                    v => die(&format!("--mode: '{v}' is not room or broadcast")),
                }
            }
            "-h" | "--help" => {
                println!(
                    "fanout --url ws://HOST:PORT/ws [--conns N] [--messages M] [--size B] \
                     [--mode room|broadcast] [--runs R]"
                );
                std::process::exit(0);
            }
            _ => die(&format!("unknown argument '{a}'")),
        }
    }
    if o.url.is_empty() {
        die("--url ws://HOST:PORT/ws is required (a running `wsloop serve --app chat`)");
    }
    o
}

fn die(msg: &str) -> ! {
    eprintln!("fanout: {msg}");
    std::process::exit(2)
}

fn main() {
    if let Err(e) = run(&parse_args()) {
        die(&e);
    }
}
