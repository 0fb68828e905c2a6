//! The smallest useful server: echo every message back.
//!
//! `cargo run --example echo -- 127.0.0.1:9001`
use wsloop::server::{ConnId, Ctx, Handler, Server};
use wsloop::{Config, Message};

struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        // `msg` borrows the loop's read buffer; sending copies it once into
        // this connection's write queue.
        let _ = ctx.send(id, msg);
    }
}

fn main() -> Result<(), wsloop::Error> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let server = Server::bind(addr.as_str(), Config::default(), Echo)?;
    println!("echo server on ws://{}", server.local_addr());
    server.run()?;
    Ok(())
}
