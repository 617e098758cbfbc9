//! `ferry import --config FILE images.tar`: loads an OCI image-layout archive (`ferry export`,
//! `skopeo copy ... oci-archive:`) or a `docker save` archive into the cache of the configured
//! storage, verifying every digest; tags are recorded as if pulled (marked imported, served
//! stale while the upstream is unreachable). Exit 1 with the bad entry named when the archive
//! is corrupt or truncated; nothing is tagged before all of its image is stored.

use std::path::PathBuf;
use std::process::ExitCode;

use ferry_config::Config;

use super::sync::start_mirror;

/// Arguments of `ferry import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (YAML): the upstreams (image names must be mirrored) and the cache.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The archive: an OCI image layout in a tar, or a `docker save` archive.
    archive: PathBuf,
}

/// Runs `ferry import`.
pub async fn run(args: Args) -> ExitCode {
    let config = match &args.config {
        Some(p) => Config::load(p),
        None => Config::embedded(),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\nerror: invalid configuration (run `ferry check-config FILE`)");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(config.log.format, "warn");
    let mirror = match start_mirror(&config).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let result = ferry_sync::archive::import::import(&mirror, &args.archive).await;
    mirror.shutdown().await;
    match result {
        Ok(images) => {
            for i in &images {
                println!("imported {} {}", i.name, i.digest);
            }
            println!(
                "{} images imported from {}",
                images.len(),
                args.archive.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", args.archive.display());
            ExitCode::from(1)
        }
    }
}
