//! What every thread needs, read-only: where to connect, what to send, and
//! the phases' lengths.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use wsloop::stream::Stream;
use wsloop::Config;

use crate::options::Mode;
use crate::payload::Payload;

pub(crate) struct Plan {
    pub(crate) mode: Mode,
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
    pub(crate) target: String,
    pub(crate) pipeline: usize,
    pub(crate) payload: Payload,
    pub(crate) config: Arc<Config>,
    pub(crate) connect_timeout: Duration,
    /// Per thread.
    pub(crate) max_connecting: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) hold: Duration,
    /// wss://: the client configuration and the name to verify.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl Plan {
    /// The connection's transport: plain, or TLS for wss://.
    pub(crate) fn stream(&self, tcp: TcpStream) -> Result<Stream, String> {
        #[cfg(feature = "tls")]
        if let Some((cfg, name)) = &self.tls {
            let conn = rustls::ClientConnection::new(cfg.clone(), name.clone())
                .map_err(|e| format!("connect: TLS setup: {e}"))?;
            return Ok(Stream::tls(tcp, conn.into()));
        }
        Ok(Stream::plain(tcp))
    }
}
