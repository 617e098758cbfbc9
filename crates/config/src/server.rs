//! Smaller sections: `server:` (HTTP behaviour), `tls:`, `log:`, `redis:` and `sync:`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Dur};

/// HTTP server behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// How long SIGTERM waits for in-flight responses before closing them.
    pub shutdown_timeout: Dur,
    /// Largest request head (request line + headers) accepted.
    pub max_header_bytes: ByteSize,
    /// Public base URL of this mirror (for token realms); derived from Host when unset.
    pub external_url: Option<String>,
    /// A connection that has not sent a complete request head this long after it opened (or
    /// after the first byte of a later request) is closed.
    pub header_timeout: Dur,
    /// A keep-alive connection with no request in progress is closed after this long.
    pub idle_timeout: Dur,
    /// A connection whose client accepts no byte of a response for this long is closed.
    pub send_timeout: Dur,
    /// Most open client connections; more are refused with a 503.
    pub max_connections: usize,
    /// Most open connections from one client address (IPv6: one /64); more are refused with a
    /// 429. Peers in `access.trusted_proxies` are exempt (they carry many clients).
    pub max_connections_per_ip: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shutdown_timeout: Dur::secs(30),
            max_header_bytes: ByteSize(64 * 1024),
            external_url: None,
            header_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(60),
            send_timeout: Dur::secs(60),
            max_connections: 10_000,
            max_connections_per_ip: 256,
        }
    }
}

/// TLS termination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// Filter in `RUST_LOG` syntax (the `RUST_LOG` variable wins).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Shared state for several replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
}

/// Scheduled pre-sync of an image list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// The list file (same format as `ferry sync`).
    pub list: PathBuf,
    /// How often to run it.
    pub interval: Dur,
    /// Parallel downloads.
    #[serde(default = "default_jobs")]
    pub jobs: usize,
}

fn default_jobs() -> usize {
    4
}
