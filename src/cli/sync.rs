//! `ferry sync --config FILE LIST`: pre-fetches the images of a list into the cache that
//! `ferry serve` uses (same config, same store, same engine), with bounded parallelism, a
//! progress display, a summary table, and exit code 1 when any image failed. Ctrl-C stops at
//! once; the cache only ever holds verified content, so a rerun resumes where this one ended.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use ferry_config::Config;
use ferry_metrics::Metrics;
use ferry_mirror::Mirror;
use ferry_sync::list::parse_platform;
use ferry_sync::{RetryPolicy, Summary, SyncOptions, parse_list};
use tokio_util::sync::CancellationToken;

use super::sync_progress::{Display, ProgressArg};

/// Arguments of `ferry sync`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (YAML), the one `ferry serve` runs with: its upstreams and cache.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The list: one image per line (`ghcr.io/org/app:1.2`, `nginx` for all tags, `nginx:1.2*`,
    /// optional platforms after the image), `#` comments; `-` reads standard input.
    list: PathBuf,
    /// Images and blob downloads in parallel (default: sync.jobs of the config, else 4).
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Only these platforms of multi-platform images, for lines that name none (repeatable).
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
    platforms: Vec<String>,
    /// Attempts per manifest or blob on transient failures (5xx, 429, connection errors).
    #[arg(long, default_value_t = 4)]
    retries: u32,
    /// Progress display.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
}

/// Runs `ferry sync`.
pub async fn run(args: Args) -> ExitCode {
    let prepared = match prepare(&args) {
        Ok(p) => p,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let (config, entries, opts) = prepared;
    let (mirror, cancel, display) = match start_batch(&config, args.progress.bars()).await {
        Ok(b) => b,
        Err(code) => return code,
    };
    let summary = ferry_sync::sync(&mirror, &entries, &opts, display.clone(), &cancel).await;
    display.finish();
    mirror.shutdown().await;
    report(&summary)
}

/// A loaded config, list and options.
pub type Prepared = (Config, Vec<ferry_sync::ListEntry>, SyncOptions);

/// Loads the config and the list; any problem here is bad usage (exit 2).
fn prepare(args: &Args) -> Result<Prepared, String> {
    load(&Inputs {
        config: args.config.as_deref(),
        list: &args.list,
        platforms: &args.platforms,
        jobs: args.jobs,
        retries: args.retries,
    })
}

/// What `ferry sync` and `ferry export` read before they start.
pub struct Inputs<'a> {
    /// `--config`.
    pub config: Option<&'a Path>,
    /// The list file (`-`: standard input).
    pub list: &'a Path,
    /// `--platform` values.
    pub platforms: &'a [String],
    /// `--jobs`.
    pub jobs: Option<usize>,
    /// `--retries`.
    pub retries: u32,
}

/// Loads a config and a list into sync options (errors are bad usage).
pub fn load(i: &Inputs<'_>) -> Result<Prepared, String> {
    let config = match i.config {
        Some(p) => Config::load(p),
        None => Config::embedded(),
    }
    .map_err(|e| format!("{e}\ninvalid configuration (run `ferry check-config FILE`)"))?;
    let text = read_list(i.list)?;
    let (entries, errors) = parse_list(&text);
    if !errors.is_empty() {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        return Err(format!(
            "{}: {} bad line(s):\n  {}",
            i.list.display(),
            errors.len(),
            lines.join("\n  ")
        ));
    }
    let platforms = i
        .platforms
        .iter()
        .map(|p| parse_platform(p))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = SyncOptions {
        jobs: i
            .jobs
            .or(config.sync.as_ref().map(|s| s.jobs))
            .unwrap_or(4)
            .max(1),
        platforms,
        retry: RetryPolicy {
            attempts: i.retries.max(1),
            ..RetryPolicy::default()
        },
    };
    Ok((config, entries, opts))
}

fn read_list(path: &Path) -> Result<String, String> {
    if path == Path::new("-") {
        return std::io::read_to_string(std::io::stdin())
            .map_err(|e| format!("cannot read the list from standard input: {e}"));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// What a batch command (`ferry sync`, `ferry export`) starts with: logging (quiet under
/// progress bars), the engine, cancellation on Ctrl-C or SIGTERM, and the progress display.
/// `Err`: the engine did not start (exit 1, said on stderr).
pub async fn start_batch(
    config: &Config,
    bars: bool,
) -> Result<(Mirror, CancellationToken, Arc<Display>), ExitCode> {
    let level = if bars {
        "error"
    } else {
        config.log.level.as_str()
    };
    crate::logging::init(config.log.format, level);
    let mirror = start_mirror(config).await.map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })?;
    let cancel = CancellationToken::new();
    tokio::spawn(cancel_on_signal(cancel.clone()));
    Ok((mirror, cancel, Display::new(bars)))
}

/// The same store and engine `ferry serve` builds from this config.
pub async fn start_mirror(config: &Config) -> Result<Mirror, String> {
    let store = super::serve::open_store(config, None).await?;
    Mirror::start(config, store, Arc::new(Metrics::new()))
        .await
        .map_err(|e| format!("cannot start the cache engine: {e}"))
}

/// Cancels the run on Ctrl-C or SIGTERM.
pub async fn cancel_on_signal(cancel: CancellationToken) {
    super::terminated().await;
    eprintln!("interrupted: stopping (the cache keeps what was complete; run again to resume)");
    cancel.cancel();
}

/// Prints the table (stdout) and every failure (stderr); picks the exit code.
pub fn report(summary: &Summary) -> ExitCode {
    print!("{}", summary.table());
    for (image, e) in summary.failures() {
        if *e != ferry_sync::SyncError::Cancelled {
            eprintln!("error: {image}: {e}");
        }
    }
    if summary.was_cancelled() {
        ExitCode::from(130)
    } else if summary.has_failures() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
