//! The one option every peer takes: `--addr HOST:PORT`.

use std::net::SocketAddr;

/// Parses `--addr HOST:PORT` (or `--addr=HOST:PORT`) from the command line.
/// Default 127.0.0.1:9001. Exits with status 2 on anything else.
pub fn addr(name: &str) -> SocketAddr {
    let mut addr = "127.0.0.1:9001".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--addr" {
            addr = args
                .next()
                .unwrap_or_else(|| usage(name, "--addr needs a value"));
        } else if let Some(v) = a.strip_prefix("--addr=") {
            addr = v.to_string();
        } else if a == "-h" || a == "--help" {
            println!("{name}: echo server for scripts/compare-peers.sh\n\nUSAGE:\n    {name} [--addr HOST:PORT]   [default: 127.0.0.1:9001]");
            std::process::exit(0);
        } else {
            usage(name, &format!("unknown argument '{a}'"));
        }
    }
    addr.parse().unwrap_or_else(|_| {
        usage(
            name,
            &format!("invalid --addr '{addr}': expected HOST:PORT"),
        )
    })
}

fn usage(name: &str, msg: &str) -> ! {
    eprintln!("{name}: {msg}\nUSAGE: {name} [--addr HOST:PORT]");
    std::process::exit(2);
}
