//! What a client asks for beyond the URL.

#[cfg(feature = "tls")]
use std::sync::Arc;

use crate::config::Config;

/// What a client asks for, beyond the URL.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Limits and timeouts (handshake_timeout covers connect and upgrade;
    /// ping_interval/pong_timeout give a client-side heartbeat).
    pub config: Config,
    /// Subprotocols to offer.
    pub protocols: Vec<String>,
    /// Extra request headers (Origin, Authorization, Cookie, ...).
    pub headers: Vec<(String, String)>,
    /// TLS settings for wss:// (default: verify against the bundled
    /// Mozilla roots; see [`crate::tls`]).
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let config = Config {
            // A client usually wants to hear about a dead server soon and
            // has no reason to close an idle connection itself.
            idle_timeout: None,
            read_buffer_size: 64 << 10,
            ..Config::default()
        };
        ClientOptions {
            config,
            protocols: Vec::new(),
            headers: Vec::new(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}
