//! `wsloop bench` argument parsing: several URLs, and bad values named.

use super::parse;
use crate::args::Args;

fn run(items: &[&str]) -> Result<wsloop_bench::Options, String> {
    let items = items.iter().map(|s| s.to_string()).collect();
    match parse(Args::new("bench", items)) {
        Ok(Some(o)) => Ok(o),
        Ok(None) => Err("help".into()),
        Err(e) => Err(e.0),
    }
}

/// The error `wsloop bench ITEMS` stops with.
fn fails(items: &[&str]) -> String {
    match run(items) {
        Ok(_) => panic!("accepted: {items:?}"),
        Err(e) => e,
    }
}

#[test]
fn several_urls_are_kept_in_order() {
    let o = run(&[
        "ws://127.0.0.1:10001/ws",
        "--mode",
        "chat",
        "ws://127.0.0.1:10002/ws",
        "--conns",
        "30",
        "ws://127.0.0.1:10003/ws",
    ])
    .unwrap();
    assert_eq!(
        o.urls,
        [
            "ws://127.0.0.1:10001/ws",
            "ws://127.0.0.1:10002/ws",
            "ws://127.0.0.1:10003/ws"
        ]
    );
    let o = run(&["ws://127.0.0.1:9001/"]).unwrap();
    assert_eq!(o.urls, ["ws://127.0.0.1:9001/"]);
}

#[test]
fn a_bad_url_among_several_is_named() {
    let e = fails(&["ws://127.0.0.1:10001/ws", "http://127.0.0.1:10002/ws"]);
    assert!(e.starts_with("wsloop bench: "), "{e}");
    assert!(e.contains("'http://127.0.0.1:10002/ws'"), "{e}");
    let e = fails(&["ws://127.0.0.1:10001/ws", "ws://127.0.0.1:99999/ws"]);
    assert!(e.contains("'ws://127.0.0.1:99999/ws'"), "{e}");
    assert_eq!(
        fails(&["--conns", "3"]),
        "wsloop bench: missing URL (see --help)"
    );
}

#[test]
fn ws_and_wss_do_not_mix() {
    let e = fails(&["ws://127.0.0.1:10001/ws", "wss://127.0.0.1:10002/ws"]);
    // Named whatever the build's features: the mix is refused before TLS
    // is set up.
    assert_eq!(
        e,
        "wsloop bench: URL 'wss://127.0.0.1:10002/ws' is wss:// but 'ws://127.0.0.1:10001/ws' \
         is ws://: give all ws:// or all wss:// URLs"
    );
}

#[test]
fn bad_option_values_are_named() {
    let e = fails(&["ws://127.0.0.1:1/", "--mode", "chatty"]);
    assert!(e.contains("'chatty'") && e.contains("--mode"), "{e}");
    let e = fails(&["ws://127.0.0.1:1/", "--mode", "chat", "--rate", "0"]);
    assert!(e.contains("'0'") && e.contains("--rate"), "{e}");
    let e = fails(&[
        "ws://127.0.0.1:1/",
        "--mode",
        "chat",
        "--conns",
        "5",
        "--rooms",
        "6",
    ]);
    assert_eq!(
        e,
        "wsloop bench: --rooms 6 is more than --conns 5: every room needs a member"
    );
}
