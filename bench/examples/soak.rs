//! Soak driver for `wsloop serve --app chat`, used by `scripts/soak.sh`
//! (the load is `wsloop_bench::soak`). Exit status 0 when no error was
//! counted.
//!
//! ```sh
//! cargo build --release --bin wsloop --example soak
//! target/release/wsloop serve --app chat --addr 127.0.0.1:9300 --write-limit 1M &
//! target/release/examples/soak --url ws://127.0.0.1:9300/ws --duration 600
//! ```
//!
//! Options: `--duration SECS` (600), `--listeners N` (200), `--churners N`
//! (4), `--slow N` (3), `--firehose MSGS_PER_S` (50).

use std::time::Duration;

use wsloop_bench::soak::{run, Options};

fn parse_args() -> Options {
    let mut o = Options::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| panic!("{a} needs a value"))
                .to_owned()
        };
        match a.as_str() {
            "--url" => o.url = val(),
            "--duration" => o.duration = Duration::from_secs(val().parse().expect("seconds")),
            "--listeners" => o.listeners = val().parse().expect("number"),
            "--churners" => o.churners = val().parse().expect("number"),
            "--slow" => o.slow = val().parse().expect("number"),
            "--firehose" => o.firehose = val().parse().expect("messages per second"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!o.url.is_empty(), "--url ws://HOST:PORT/ws is required");
    o
}

fn main() {
    std::process::exit(run(parse_args()));
}
