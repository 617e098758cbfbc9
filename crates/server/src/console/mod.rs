//! The web console under `/ui/` (`docs/console.md`): public pages (how to use this mirror,
//! its registries, the allowed images) and operator pages under `/ui/admin/` behind an admin
//! login (overview charts, cache browser, top users, bans, sync runs, configuration). Pages
//! are rendered on the server (maud), charts are inline SVG ([`svg`]), and the one script
//! (copy buttons) is optional. The same data is JSON under `/admin/v1/` ([`api`]).

pub mod api;
pub mod auth;
pub mod layout;
pub mod login;
pub mod operator;
pub mod overview;
pub mod people;
pub mod public;
pub mod redact;
pub mod running;
pub mod sampler;
pub mod session;
pub mod svg;
pub mod syncs;

use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferry_config::Config;
use ferry_metrics::series::{Point, Sample, Series, Window};
use tokio::sync::{mpsc, oneshot};

use crate::App;
use session::Sessions;
use syncs::SyncLog;

/// A request to reload the configuration, answered with the outcome.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// The console's state, shared by its handlers.
#[derive(Debug)]
pub struct Console {
    config: ArcSwap<Config>,
    series: Mutex<Series>,
    /// Logged-in operators.
    pub sessions: Sessions,
    /// The scheduled sync's recent runs.
    pub syncs: SyncLog,
    reload: OnceLock<mpsc::Sender<ReloadRequest>>,
}

impl Console {
    /// The console of a server running `config`, with time series read back at start.
    pub fn new(config: &Config, series: Series) -> Console {
        Console {
            config: ArcSwap::from_pointee(config.clone()),
            series: Mutex::new(series),
            sessions: Sessions::new(config.ui.session_idle.0),
            syncs: SyncLog::default(),
            reload: OnceLock::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Notes a reloaded configuration.
    pub fn set_config(&self, config: Config) {
        self.config.store(Arc::new(config));
    }

    /// Counts a sample of the running totals at `now` (Unix seconds).
    pub fn sample(&self, s: &Sample, now: u64) {
        self.series.lock().expect("series lock").record(now, s);
    }

    /// The buckets of `w` ending at `now`.
    pub fn points(&self, w: Window, now: u64) -> Vec<Point> {
        self.series.lock().expect("series lock").points(w, now)
    }

    /// Where reload requests go (set once by `ferry serve`, which owns the reload).
    pub fn set_reload(&self, tx: mpsc::Sender<ReloadRequest>) {
        let _ = self.reload.set(tx);
    }

    /// Reloads the configuration the way SIGHUP does, and says how it went.
    pub async fn reload(&self) -> Result<(), String> {
        let tx = self
            .reload
            .get()
            .ok_or("this server cannot reload its configuration")?;
        let (answer, outcome) = oneshot::channel();
        tx.send(answer)
            .await
            .map_err(|_| "the server is shutting down")?;
        outcome
            .await
            .map_err(|_| "the reload was abandoned".to_owned())?
    }
}

/// The `/ui/` routes.
pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/ui", get(public::home))
        .route("/ui/", get(public::home))
        .route("/ui/registries", get(public::registries))
        .route("/ui/images", get(public::images))
        .route("/ui/assets/console.css", get(layout::stylesheet))
        .route("/ui/assets/copy.js", get(layout::script))
        .route("/ui/login", get(login::form).post(login::submit))
        .route("/ui/logout", post(login::logout))
        .route("/ui/admin", get(overview::show))
        .route("/ui/admin/", get(overview::show))
        .route("/ui/admin/cache", get(operator::cache))
        .route("/ui/admin/cache/evict", post(operator::evict))
        .route("/ui/admin/usage", get(people::usage))
        .route("/ui/admin/bans", get(people::bans))
        .route("/ui/admin/bans/lift", post(people::lift))
        .route("/ui/admin/syncs", get(running::syncs))
        .route("/ui/admin/config", get(running::config))
        .route("/ui/admin/reload", post(running::reload))
        .route_layer(middleware::from_fn_with_state(app, enabled))
}

/// `ui.enabled: false` removes the console: every `/ui/` path is a 404.
pub async fn enabled(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if app.console.config().ui.enabled {
        next.run(req).await
    } else {
        crate::error::ApiError::not_found().into_response()
    }
}
