//! Runs the Autobahn fuzzingserver protocol as a client:
//! `autobahn_client URL AGENT` asks `/getCaseCount`, runs every case at
//! `/runCase?case=N&agent=AGENT` echoing each message, then asks
//! `/updateReports?agent=AGENT`. `WSLOOP_DEFLATE=1` offers
//! permessage-deflate; `WSLOOP_CLIENT_TAKEOVER=1` then leaves out
//! `client_no_context_takeover`.
use std::time::Duration;

use wsloop::client::{connect_with, ClientOptions};
use wsloop::{CloseCode, Event, Message};

fn options() -> ClientOptions {
    let mut o = ClientOptions::default();
    // The suite sends messages up to 16 MiB and never expects our pings.
    o.config.max_message_size = 64 << 20;
    o.config.max_frame_size = 64 << 20;
    o.config.ping_interval = None;
    o.config.write_buffer_limit = 256 << 20;
    o.config.write_buffer_high = 128 << 20;
    // WSLOOP_DEFLATE=1: offer permessage-deflate (cases 12.* and 13.*),
    // with client_no_context_takeover unless WSLOOP_CLIENT_TAKEOVER=1, so
    // that a second run checks our compressor keeping its window.
    if std::env::var("WSLOOP_DEFLATE").is_ok_and(|v| v == "1") {
        o.config.deflate.enabled = true;
        o.config.deflate.client_no_context_takeover =
            !std::env::var("WSLOOP_CLIENT_TAKEOVER").is_ok_and(|v| v == "1");
        o.config.deflate.min_size = 0;
    }
    o
}

fn run_case(base: &str, case: u32, agent: &str) -> Result<(), wsloop::Error> {
    let mut ws = connect_with(
        &format!("{base}/runCase?case={case}&agent={agent}"),
        &options(),
    )?;
    ws.set_read_timeout(Some(Duration::from_secs(60)));
    loop {
        match ws.recv() {
            Ok(Event::Message(m)) => {
                if ws.send(m).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(base), agent) = (args.next(), args.next().unwrap_or_else(|| "wsloop".into())) else {
        eprintln!("usage: autobahn_client ws://HOST:PORT [AGENT]");
        std::process::exit(2);
    };
    let base = base.trim_end_matches('/').to_owned();
    let count: u32 = match connect_with(&format!("{base}/getCaseCount"), &options())
        .and_then(|mut ws| ws.recv_message())
    {
        Ok(Message::Text(t)) => t.trim().parse().unwrap_or(0),
        Ok(_) => 0,
        Err(e) => {
            eprintln!("autobahn_client: cannot get the case count from {base}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("autobahn_client: {count} cases");
    for case in 1..=count {
        if let Err(e) = run_case(&base, case, &agent) {
            eprintln!("case {case}: {e}");
        }
    }
    match connect_with(&format!("{base}/updateReports?agent={agent}"), &options()) {
        Ok(mut ws) => {
            let _ = ws.close(CloseCode::NORMAL, "");
        }
        Err(e) => {
            eprintln!("autobahn_client: updateReports failed: {e}");
            std::process::exit(1);
        }
    }
    eprintln!("autobahn_client: done");
}
