//! What a client asks for beyond the URL.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::Config;

/// What a client asks for, beyond the URL.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Limits and timeouts (handshake_timeout covers connect and upgrade;
    /// ping_interval/pong_timeout give a client-side heartbeat). The
    /// clients made from one `ClientOptions` share one copy of it while it
    /// stays unchanged.
    pub config: Config,
    /// Subprotocols to offer.
    pub protocols: Vec<String>,
    /// Extra request headers (Origin, Authorization, Cookie, ...).
    pub headers: Vec<(String, String)>,
    /// TLS settings for wss:// (default: verify against the bundled
    /// Mozilla roots; see [`crate::tls`]).
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Set TCP_NODELAY on the socket, so a small message goes out at once
    /// rather than waiting for the ACK of the last (Nagle). Default true,
    /// as Go's net package and browsers do.
    pub nodelay: bool,
    shared: SharedConfig,
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
            nodelay: true,
            shared: SharedConfig::default(),
        }
    }
}

impl ClientOptions {
    /// `config` behind an `Arc` that every client connected with these
    /// options shares (a copy per client was ~300 bytes of each idle
    /// client). `config` is a public field, so the copy is compared with
    /// it and replaced when it was changed.
    pub(crate) fn shared_config(&self) -> Arc<Config> {
        let mut slot = self.shared.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(c) if **c == self.config => c.clone(),
            _ => {
                let c = Arc::new(self.config.clone());
                *slot = Some(c.clone());
                c
            }
        }
    }
}

#[derive(Default)]
struct SharedConfig(Mutex<Option<Arc<Config>>>);

impl Clone for SharedConfig {
    fn clone(&self) -> Self {
        let c = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        SharedConfig(Mutex::new(c))
    }
}

impl fmt::Debug for SharedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedConfig")
    }
}
