//! The mirror health gate: while the mirror is down, pods keep their original images.
//!
//! When `mirror_health.url` is set, [`poll`] GETs it every `interval`. After `failure_threshold`
//! consecutive failures (no answer within `timeout`, or a non-2xx status) the gate closes and
//! the webhook admits pods unchanged with a warning; one successful probe opens it again. Until
//! the first probe of a URL has succeeded the gate is closed: not rewriting is always safe,
//! rewriting to a dead mirror is not.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::HealthConfig;
use crate::settings::Settings;

/// Whether the webhook may rewrite right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Rewrite.
    Open,
    /// Do not rewrite, for this reason.
    Closed(String),
}

/// The last known health of the configured mirror.
#[derive(Debug, Default)]
pub struct MirrorHealth {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    url: String,
    healthy: bool,
    failures: u32,
    reason: String,
}

impl MirrorHealth {
    /// The gate for a request handled under `settings`.
    pub fn gate(&self, settings: &Settings) -> Gate {
        let Some(config) = settings.health() else {
            return Gate::Open;
        };
        let state = self.state.lock().expect("health lock");
        match (state.url == config.url, state.healthy) {
            (true, true) => Gate::Open,
            (true, false) if !state.reason.is_empty() => Gate::Closed(state.reason.clone()),
            _ => Gate::Closed("not checked yet".into()),
        }
    }

    /// Records one probe of `url`.
    fn record(&self, url: &str, result: Result<(), String>, threshold: u32) {
        let mut s = self.state.lock().expect("health lock");
        if s.url != url {
            *s = State {
                url: url.to_owned(),
                ..State::default()
            };
        }
        match result {
            Ok(()) => {
                if !s.healthy {
                    tracing::info!(url, "mirror healthy: rewriting images");
                }
                s.healthy = true;
                s.failures = 0;
            }
            Err(reason) => {
                s.failures = s.failures.saturating_add(1);
                let first_ever = s.reason.is_empty() && !s.healthy;
                if (s.healthy && s.failures >= threshold) || first_ever {
                    tracing::warn!(url, %reason, "mirror unhealthy: admitting pods unchanged");
                    s.healthy = false;
                }
                s.reason = reason;
            }
        }
    }
}

/// Probes the configured URL until `cancel`, following config reloads.
pub async fn poll(
    health: Arc<MirrorHealth>,
    settings: Arc<ArcSwap<Settings>>,
    cancel: CancellationToken,
) {
    let mut client: Option<(ClientKey, reqwest::Client)> = None;
    while !cancel.is_cancelled() {
        let current = settings.load_full();
        let Some(config) = current.health() else {
            wait_for_change(&settings, &current, Duration::from_secs(3600), &cancel).await;
            continue;
        };
        let result = match client_for(config, &mut client) {
            Ok(c) => probe(c, config).await,
            Err(e) => Err(e),
        };
        health.record(&config.url, result, config.failure_threshold);
        wait_for_change(&settings, &current, config.interval, &cancel).await;
    }
}

/// Sleeps up to `max`, waking early when the settings are replaced or on cancel.
async fn wait_for_change(
    settings: &ArcSwap<Settings>,
    current: &Arc<Settings>,
    max: Duration,
    cancel: &CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + max;
    while tokio::time::Instant::now() < deadline && Arc::ptr_eq(&settings.load(), current) {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200).min(max)) => {}
        }
    }
}

type ClientKey = (Option<std::path::PathBuf>, Duration);

fn client_for<'a>(
    config: &HealthConfig,
    cache: &'a mut Option<(ClientKey, reqwest::Client)>,
) -> Result<&'a reqwest::Client, String> {
    let key = (config.ca_file.clone(), config.timeout);
    if cache.as_ref().is_none_or(|(k, _)| *k != key) {
        *cache = Some((key, build_client(config)?));
    }
    Ok(&cache.as_ref().expect("just set").1)
}

fn build_client(config: &HealthConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .pool_max_idle_per_host(1);
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("bad ca_file {}: {e}", path.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

async fn probe(client: &reqwest::Client, config: &HealthConfig) -> Result<(), String> {
    match client.get(&config.url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!(
            "{} answered HTTP {}",
            config.url,
            r.status().as_u16()
        )),
        Err(e) if e.is_timeout() => Err(format!("{} timed out", config.url)),
        Err(e) if e.is_connect() => Err(format!("cannot connect to {}", config.url)),
        Err(e) => Err(format!("{} failed: {e}", config.url)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::from_yaml(
            "mirror: m.example.com\nmirror_health: {url: 'http://m/h', failure_threshold: 2}",
        )
        .unwrap()
    }

    #[test]
    fn open_without_health_config() {
        let s = Settings::from_yaml("mirror: m.example.com").unwrap();
        assert_eq!(MirrorHealth::default().gate(&s), Gate::Open);
    }

    #[test]
    fn closed_until_first_success_then_threshold_applies() {
        let (h, s) = (MirrorHealth::default(), settings());
        assert_eq!(h.gate(&s), Gate::Closed("not checked yet".into()));
        h.record("http://m/h", Err("down".into()), 2);
        assert_eq!(h.gate(&s), Gate::Closed("down".into()));
        h.record("http://m/h", Ok(()), 2);
        assert_eq!(h.gate(&s), Gate::Open);
        h.record("http://m/h", Err("blip".into()), 2);
        assert_eq!(h.gate(&s), Gate::Open, "one failure is below the threshold");
        h.record("http://m/h", Err("down".into()), 2);
        assert_eq!(h.gate(&s), Gate::Closed("down".into()));
    }

    #[test]
    fn a_new_url_starts_closed() {
        let (h, s) = (MirrorHealth::default(), settings());
        h.record("http://other/h", Ok(()), 2);
        assert!(matches!(h.gate(&s), Gate::Closed(_)));
    }
}
