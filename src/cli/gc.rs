//! `ferry gc`: list what the cache holds (repositories, tags, sizes, last served), or evict
//! by last-served age (`--older-than 30d`) or by repository (`--repository 'docker.io/library/*'`).
//! Safe to run while `ferry serve` uses the same cache: deleted blobs are fetched again on demand.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use ferry_config::{Config, Dur};
use ferry_mirror::inspect::{self, Evicted, Inventory};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// ferry's configuration file (for the storage settings); the embedded default when absent.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Evict blobs not served for this long (e.g. 30d, 12h).
    #[arg(long, value_parser = parse_dur)]
    older_than: Option<Duration>,
    /// Evict the repositories matching this glob over `upstream/repository` (`*` within a path
    /// component, `**` across); blobs other repositories use are kept. Repeatable.
    #[arg(long)]
    repository: Vec<String>,
    /// Show what would be evicted without deleting anything.
    #[arg(long)]
    dry_run: bool,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    Dur::parse(s).map(|d| d.0)
}

/// Runs the subcommand.
pub async fn run(args: Args) -> ExitCode {
    let loaded = match &args.config {
        Some(p) => Config::load(p),
        None => Config::embedded(),
    };
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match gc(&config, &args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn gc(config: &Config, args: &Args) -> Result<(), String> {
    let store = super::serve::open_store(config, None).await?;
    let inv = inspect::scan(store.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    if args.older_than.is_none() && args.repository.is_empty() {
        print_inventory(&inv);
        return Ok(());
    }
    let verb = if args.dry_run {
        "would evict"
    } else {
        "evicted"
    };
    if let Some(age) = args.older_than {
        let e = inspect::evict_older_than(store.as_ref(), &inv, age, args.dry_run)
            .await
            .map_err(|e| e.to_string())?;
        report(
            verb,
            &format!("not served for {}", humantime::format_duration(age)),
            &e,
        );
    }
    for pattern in &args.repository {
        let e = inspect::evict_repositories(store.as_ref(), &inv, pattern, args.dry_run)
            .await
            .map_err(|e| e.to_string())?;
        report(verb, pattern, &e);
    }
    Ok(())
}

fn report(verb: &str, what: &str, e: &Evicted) {
    println!(
        "{verb} {} blobs ({}) and {} tags: {what}",
        e.blobs.len(),
        human_size(e.bytes),
        e.tags
    );
}

fn print_inventory(inv: &Inventory) {
    let width = inv
        .repos
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(10)
        .max(10);
    println!(
        "{:<width$}  {:>5}  {:>10}  LAST SERVED",
        "REPOSITORY", "TAGS", "SIZE"
    );
    for r in &inv.repos {
        println!(
            "{:<width$}  {:>5}  {:>10}  {}",
            r.name,
            r.tags.len(),
            human_size(r.bytes),
            ago(r.last_served)
        );
    }
    println!(
        "{:<width$}  {:>5}  {:>10}",
        "(pulled by digest only)",
        "",
        human_size(inv.unattributed_bytes())
    );
    println!(
        "total: {} repositories, {} blobs, {}",
        inv.repos.len(),
        inv.blobs.len(),
        human_size(inv.total_bytes())
    );
    print_deleted_upstream(inv);
}

/// Cached tags the upstream has deleted: served for `cache.keep_deleted` after the first 404.
fn print_deleted_upstream(inv: &Inventory) {
    if inv.deleted_upstream.is_empty() {
        return;
    }
    println!("\ndeleted upstream (served for cache.keep_deleted after the first 404):");
    for d in &inv.deleted_upstream {
        println!(
            "  {}  since {} ({})",
            d.image,
            humantime::format_rfc3339_seconds(d.since),
            ago(d.since)
        );
    }
}

fn human_size(n: u64) -> String {
    ferry_config::ByteSize(n).human()
}

fn ago(t: SystemTime) -> String {
    match SystemTime::now().duration_since(t) {
        Ok(d) if t > SystemTime::UNIX_EPOCH => format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(d.as_secs()))
        ),
        _ => "-".into(),
    }
}
