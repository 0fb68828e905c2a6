//! Echo server on fastwebsockets 0.10, upgraded through hyper 1.x.
//!
//! This follows fastwebsockets' own `examples/echo_server.rs`: a tokio
//! `current_thread` runtime, hyper's http1 server with upgrades, the
//! upgraded stream wrapped in a `FragmentCollector` (so fragmented messages
//! come out whole), each text or binary frame written straight back, the
//! connection task run `unconstrained`. auto_close and auto_pong are on
//! (fastwebsockets' defaults, set explicitly here). TCP_NODELAY is set on
//! every accepted socket. One thread: pinned with `taskset -c 0` by
//! scripts/compare-peers.sh, it gets the same single core as wsloop.

#[path = "../args.rs"]
mod args;

use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpListener;

async fn handle_client(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = fut.await?;
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn server_upgrade(
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::task::spawn(async move {
        match tokio::task::unconstrained(handle_client(fut)).await {
            Ok(())
            | Err(
                WebSocketError::ConnectionClosed
                | WebSocketError::UnexpectedEOF
                | WebSocketError::IoError(_),
            ) => {}
            Err(e) => eprintln!("peer-fastwebsockets: {e}"),
        }
    });
    Ok(response)
}

fn main() {
    let addr = args::addr("peer-fastwebsockets");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await.expect("bind");
        eprintln!(
            "peer-fastwebsockets: listening on {addr} (tokio current_thread, hyper 1 upgrade)"
        );
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("peer-fastwebsockets: accept: {e}");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = http1::Builder::new()
                    .serve_connection(io, service_fn(server_upgrade))
                    .with_upgrades();
                if let Err(e) = conn.await {
                    if !e.is_incomplete_message() {
                        eprintln!("peer-fastwebsockets: http: {e}");
                    }
                }
            });
        }
    });
}
