//! Echo server on tokio-tungstenite 0.30.
//!
//! Runtime: tokio `current_thread` (one thread, one task per connection).
//! tokio's docs recommend the multi-thread runtime for servers; the single
//! thread is chosen here on purpose so that, pinned to one core with
//! `taskset -c 0` by scripts/compare-peers.sh, it does the same work on the
//! same single core as wsloop's one event loop. TCP_NODELAY is set on every
//! accepted socket.
//!
//! Each connection: `accept_async` (the upgrade), then read messages; text
//! and binary are fed back (`feed`: queued, no flush), and the socket is
//! flushed once no further message is ready, so pipelined messages leave in
//! one write, as tungstenite's write/flush split intends. Pings are
//! answered by tungstenite itself on the next write or flush, and a close
//! is answered by it too (the stream then ends).

#[path = "../args.rs"]
mod args;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{Error, Message};

async fn serve(stream: TcpStream) -> Result<(), Error> {
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    while let Some(msg) = ws.next().await {
        let mut msg = msg?;
        loop {
            if matches!(msg, Message::Text(_) | Message::Binary(_)) {
                ws.feed(msg).await?;
            }
            // Take whatever else is already readable before flushing.
            match ws.next().now_or_never() {
                Some(Some(next)) => msg = next?,
                Some(None) => return ws.flush().await,
                None => break,
            }
        }
        ws.flush().await?;
    }
    Ok(())
}

fn main() {
    let addr = args::addr("peer-tungstenite");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await.expect("bind");
        eprintln!("peer-tungstenite: listening on {addr} (tokio current_thread)");
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("peer-tungstenite: accept: {e}");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                match serve(stream).await {
                    Ok(())
                    | Err(
                        Error::ConnectionClosed
                        | Error::AlreadyClosed
                        | Error::Protocol(_)
                        | Error::Io(_),
                    ) => {}
                    Err(e) => eprintln!("peer-tungstenite: {e}"),
                }
            });
        }
    });
}
