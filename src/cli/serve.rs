//! `ferry serve`: load the config, open the cache, start the engine and the HTTP server; reload
//! on SIGHUP or when the config file changes (an invalid new config is logged and the old one
//! kept), and the TLS certificate when its files change (one watcher, `ferry_watch`); drain on
//! SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use ferry_config::{Config, LogFormat};
use ferry_metrics::Metrics;
use ferry_mirror::Mirror;
use ferry_server::App;
use ferry_server::console::sampler;
use ferry_server::console::syncs::SyncRun;
use ferry_server::console::{Console, ReloadRequest};
use ferry_server::listen::{self, ListenOptions};
use ferry_storage::BlobStore;
use ferry_storage::FileMaps;
use ferry_storage::fs::FsStore;
use ferry_storage::object::{ObjectOptions, ObjectStore, S3Options};
use ferry_storage::tiered::TieredStore;
use ferry_watch::FileWatch;
use tokio_util::sync::CancellationToken;

use super::LogFormatArg;

/// Runs the server until SIGTERM/SIGINT.
pub async fn run(path: Option<PathBuf>, log_format: Option<LogFormatArg>) -> ExitCode {
    let config = match load(path.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let format = match log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config.log.format,
    };
    crate::logging::init(format, &config.log.level);
    if let Some(w) = super::foreign_env_warning() {
        tracing::warn!("{w}");
    }
    match start(config, path).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    let loaded = match path {
        Some(p) => Config::load(p),
        None => Config::embedded(),
    };
    loaded.map_err(|e| {
        eprintln!("{e}");
        eprintln!("error: invalid configuration (run `ferry check-config FILE` for details)");
        ExitCode::from(2)
    })
}

/// Opens the configured store: local disk, or an S3-compatible bucket (checked for access and
/// conditional-write support at start), optionally behind a local-disk tier. With `maps`, blobs
/// on local disk are served from memory maps registered there (for `sendfile`).
pub(crate) async fn open_store(
    config: &Config,
    maps: Option<FileMaps>,
) -> Result<Arc<dyn BlobStore>, String> {
    let with_maps = |store: FsStore| match &maps {
        Some(m) => store.with_file_maps(m.clone()),
        None => store,
    };
    let Some(s3) = &config.storage.s3 else {
        let root = config.storage.fs_root().unwrap_or_default();
        let store = FsStore::open(&root)
            .map_err(|e| format!("cannot open the cache at {}: {e}", root.display()))?;
        return Ok(Arc::new(with_maps(store)));
    };
    let store = object_store(config, s3).await?;
    let Some(local) = &config.storage.local_cache else {
        return Ok(store);
    };
    let disk = FsStore::open(&local.root).map_err(|e| {
        format!(
            "cannot open the local cache at {}: {e}",
            local.root.display()
        )
    })?;
    let tiered = TieredStore::new(with_maps(disk), store, local.max_size.0)
        .await
        .map_err(|e| {
            format!(
                "cannot index the local cache at {}: {e}",
                local.root.display()
            )
        })?;
    Ok(Arc::new(tiered))
}

/// The S3-compatible store, connected, behind its circuit breaker.
async fn object_store(
    config: &Config,
    s3: &ferry_config::S3Config,
) -> Result<Arc<dyn BlobStore>, String> {
    let spool = config.storage.object_spool_dir();
    let mut opts = ObjectOptions::new(&spool);
    opts.timeout = s3.timeout.0;
    opts.part_size = s3.part_size.0 as usize;
    opts.upload_concurrency = s3.upload_concurrency;
    let options = S3Options {
        bucket: s3.bucket.clone(),
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        prefix: s3.prefix.clone(),
        access_key_id: s3.access_key_id.clone(),
        secret_access_key: s3.secret_access_key.as_ref().map(|s| s.expose().to_owned()),
        virtual_host_style: s3.virtual_host_style,
    };
    let where_ = format!(
        "bucket {:?} at {}",
        s3.bucket,
        s3.endpoint.as_deref().unwrap_or("AWS S3")
    );
    let store = ObjectStore::s3(&options, opts)
        .map_err(|e| format!("cannot open the object store ({where_}): {e}"))?;
    store
        .connect()
        .await
        .map_err(|e| format!("cannot use the object store ({where_}): {e}"))?;
    // A hung store fails quick requests within `fail_within`, and then fails fast for a while
    // (a local tier in front of it still serves what it holds).
    Ok(Arc::new(ferry_storage::breaker::BreakerStore::new(
        Arc::new(store),
        s3.fail_within.0,
    )))
}

async fn start(config: Config, path: Option<PathBuf>) -> Result<(), String> {
    // Plain-TCP connections send cached blobs with sendfile; TLS needs the bytes in user space
    // anyway, so it keeps chunked reads.
    let file_maps = config.tls.is_none().then(FileMaps::new);
    let store = open_store(&config, file_maps.clone()).await?;
    let metrics = Arc::new(Metrics::new());
    let mirror = Mirror::start(&config, store, metrics.clone())
        .await
        .map_err(|e| format!("cannot start the cache engine: {e}"))?;
    let listener = ferry_server::listen::bind(&config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    tracing::info!(
        listen = %config.listen,
        upstreams = config.upstreams.len(),
        default_upstream = %config.default_upstream,
        cached_blobs = mirror.index().len(),
        cached_bytes = mirror.index().total(),
        "ferry is serving"
    );
    let access = access_control(&config, &metrics).await?;
    let charts = ConsoleState::open(&config, &access).await;
    let console = charts.console.clone();
    let app = Arc::new(App {
        mirror: mirror.clone(),
        access,
        metrics,
        external_url: config.server.external_url.clone(),
        tls: config.tls.is_some(),
        max_header_bytes: config.server.max_header_bytes.0 as usize,
        console: console.clone(),
    });
    let stop = CancellationToken::new();
    // Every long-running task is owned by the engine's tracker; shutdown waits for them.
    let tasks = mirror.tasks().clone();
    let tls = match &config.tls {
        Some(t) => Some(
            ferry_server::tls::acceptor(t.cert.clone(), t.key.clone())
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let (acceptor, certs) = tls.unzip();
    let files = watched_files(path.as_deref(), &app, certs);
    tasks.spawn(files.run(FILE_CHECK, stop.clone()));
    tasks.spawn(watch_signals(
        stop.clone(),
        app.clone(),
        path,
        charts.reloads,
    ));
    tasks.spawn(sampler::run(
        app.clone(),
        charts.series_file,
        charts.series_key,
        stop.clone(),
    ));
    if let Some(sync) = config.sync.clone() {
        tasks.spawn(ferry_sync::schedule::run_scheduled(
            mirror.clone(),
            sync,
            stop.clone(),
            move |run| console.syncs.push(sync_run(run)),
        ));
    }

    let opts = listen_options(&config, file_maps, &app.metrics);
    listen::serve(listener, ferry_server::router(app), opts, acceptor, stop).await;
    mirror.shutdown().await;
    tracing::info!("ferry stopped");
    Ok(())
}

/// Access control over the config's `access:` section, counted in `metrics`, keeping bans
/// in the cache directory when there is no Redis.
async fn access_control(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<ferry_access::Access, String> {
    let access = ferry_access::Access::new(&config.access, config.redis.as_ref())
        .await
        .map_err(|e| format!("access control: {e}"))?;
    access.set_metrics(metrics.clone());
    if let Some(path) = bans_file(config) {
        access.keep_bans_in(path);
    }
    Ok(access)
}

/// The console's state at start: its time series (from `<cache root>/_console/series.json`,
/// else from Redis when it is configured), and the channel of its reload button.
struct ConsoleState {
    console: Arc<Console>,
    series_file: Option<PathBuf>,
    series_key: Option<String>,
    reloads: tokio::sync::mpsc::Receiver<ReloadRequest>,
}

impl ConsoleState {
    async fn open(config: &Config, access: &ferry_access::Access) -> Self {
        let series_file = console_dir(config).map(|d| d.join("series.json"));
        let mut series = series_file
            .as_deref()
            .map(sampler::load)
            .unwrap_or_default();
        let series_key = access
            .has_redis()
            .then(|| sampler::redis_name(&config.listen));
        if let Some(key) = series_key.as_deref().filter(|_| series.is_empty()) {
            series = sampler::load_shared(access, key).await;
        }
        let console = Arc::new(Console::new(config, series));
        let (reload_tx, reloads) = tokio::sync::mpsc::channel(4);
        console.set_reload(reload_tx);
        ConsoleState {
            console,
            series_file,
            series_key,
            reloads,
        }
    }
}

/// The console's state directory, `<cache root>/_console` (its time series), when the cache
/// is on local disk.
fn console_dir(config: &Config) -> Option<PathBuf> {
    let root = config
        .storage
        .fs_root()
        .or_else(|| config.storage.local_cache.as_ref().map(|l| l.root.clone()))?;
    let dir = root.join("_console");
    match std::fs::create_dir_all(&dir) {
        Ok(()) => Some(dir),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "the console's charts will not survive a restart");
            None
        }
    }
}

/// A scheduled sync run as the console shows it.
fn sync_run(r: ferry_sync::schedule::RunRecord) -> SyncRun {
    SyncRun {
        started: r
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        seconds: r.took.as_secs(),
        list: r.list.display().to_string(),
        images: r.images,
        failed: r.failed,
        bytes_fetched: r.bytes_fetched,
        errors: r.errors,
    }
}

/// The accept loop's settings (`server:` section).
fn listen_options(
    config: &Config,
    file_maps: Option<FileMaps>,
    metrics: &Arc<Metrics>,
) -> ListenOptions {
    ListenOptions {
        max_header_bytes: config.server.max_header_bytes.0 as usize,
        grace: config.server.shutdown_timeout.0,
        file_maps,
        timeouts: ferry_server::timed_io::Timeouts {
            header: config.server.header_timeout.0,
            idle: config.server.idle_timeout.0,
            send: config.server.send_timeout.0,
        },
        limits: ferry_server::conn_limits::ConnLimits::new(
            config.server.max_connections,
            config.server.max_connections_per_ip,
            config.access.trusted_proxies.iter().map(|c| c.0).collect(),
        ),
        metrics: Some(metrics.clone()),
    }
}

/// Where bans are kept across restarts without Redis: `<cache root>/_fairuse/bans.json`.
fn bans_file(config: &Config) -> Option<PathBuf> {
    if config.redis.is_some() {
        return None;
    }
    let root = config
        .storage
        .fs_root()
        .or_else(|| config.storage.local_cache.as_ref().map(|l| l.root.clone()))?;
    let dir = root.join("_fairuse");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "bans will not survive a restart");
        return None;
    }
    Some(dir.join("bans.json"))
}

/// How often the watched files are looked at when no change event arrives.
const FILE_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// The files a running server reloads, in one watcher: the config file (modification time,
/// size or target of a symlink, as when Kubernetes swaps a mounted ConfigMap) and the TLS
/// certificate and key.
fn watched_files(
    path: Option<&Path>,
    app: &Arc<App>,
    certs: Option<ferry_server::tls::CertReload>,
) -> FileWatch {
    let mut files = FileWatch::new();
    if let Some(path) = path {
        let paths = [path.to_owned()];
        let (app, path) = (app.clone(), path.to_owned());
        files = files.on_change(&paths, move || {
            let (app, path) = (app.clone(), path.clone());
            async move {
                tracing::info!(file = %path.display(), "configuration file changed");
                let _ = reload(&app, Some(&path)).await;
            }
        });
    }
    if let Some(certs) = certs {
        files = files.on_change(&certs.paths(), move || {
            certs.reload();
            std::future::ready(())
        });
    }
    files
}

/// SIGTERM/SIGINT stop the server; SIGHUP, and the console's reload button (`asked`),
/// reload the config file.
async fn watch_signals(
    stop: CancellationToken,
    app: Arc<App>,
    path: Option<PathBuf>,
    mut asked: tokio::sync::mpsc::Receiver<ReloadRequest>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = super::terminated() => {
                tracing::info!("shutting down: no new connections, finishing in-flight responses");
                stop.cancel();
                return;
            }
            () = stop.cancelled() => return,
            _ = hup.recv() => {
                let _ = reload(&app, path.as_deref()).await;
            }
            Some(answer) = asked.recv() => {
                let _ = answer.send(reload(&app, path.as_deref()).await);
            }
        }
    }
}

async fn reload(app: &App, path: Option<&Path>) -> Result<(), String> {
    let Some(path) = path else {
        tracing::info!("reload: running on the embedded default config, nothing to reload");
        return Err("ferry runs on its embedded default config: there is no file to reload".into());
    };
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "configuration NOT reloaded; keeping the previous one");
            return Err(e.to_string());
        }
    };
    // Both parts are built first; only when both are good are both applied, so a bad
    // htpasswd file or a bad upstream leaves the whole previous config in force.
    let access = app
        .access
        .prepare_reload(&config.access, config.redis.as_ref())
        .await;
    let mirror = app.mirror.prepare_reload(&config);
    match (access, mirror) {
        (Ok(access), Ok(mirror)) => {
            app.access.apply_reload(access);
            app.mirror.apply_reload(mirror);
            app.console.set_config(config);
            tracing::info!(file = %path.display(), "configuration reloaded");
            Ok(())
        }
        (Err(e), _) => {
            tracing::error!(file = %path.display(), error = %e, "configuration NOT reloaded; keeping the previous one");
            Err(e.to_string())
        }
        (_, Err(e)) => {
            tracing::error!(file = %path.display(), error = %e, "configuration NOT reloaded (upstreams); keeping the previous one");
            Err(e.to_string())
        }
    }
}
