//! `ferry export --config FILE LIST --output images.tar`: the images of a sync list (same
//! syntax as `ferry sync`) as one OCI image-layout archive, read from the cache where it has
//! them and from the upstream where not (through the same engine, so they are cached too).
//! Progress as for `ferry sync`; an interrupted export resumes from its staging directory
//! (`images.tar.partial.d/`), skipping blobs already there and verified.

use std::path::PathBuf;
use std::process::ExitCode;

use ferry_sync::archive::export::{export, staging_dir};

use super::sync::{Inputs, load, report, start_batch};
use super::sync_progress::ProgressArg;

/// Arguments of `ferry export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (YAML): the upstreams and the cache to read from.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The list, as for `ferry sync` (`-` reads standard input).
    list: PathBuf,
    /// The archive to write (an OCI image layout in a tar).
    #[arg(long, short)]
    output: PathBuf,
    /// Images and blob downloads in parallel (default: sync.jobs of the config, else 4).
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Only this platform of multi-platform images, for lines that name none: its manifest is
    /// exported under the tag (repeatable; the first matching platform is taken).
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
    platforms: Vec<String>,
    /// Attempts per manifest or blob on transient failures.
    #[arg(long, default_value_t = 4)]
    retries: u32,
    /// Progress display.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
}

/// Runs `ferry export`.
pub async fn run(args: Args) -> ExitCode {
    let inputs = Inputs {
        config: args.config.as_deref(),
        list: &args.list,
        platforms: &args.platforms,
        jobs: args.jobs,
        retries: args.retries,
    };
    let (config, entries, opts) = match load(&inputs) {
        Ok(p) => p,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let (mirror, cancel, display) = match start_batch(&config, args.progress.bars()).await {
        Ok(b) => b,
        Err(code) => return code,
    };
    let (summary, written) = export(
        &mirror,
        &entries,
        &opts,
        display.clone(),
        &cancel,
        &args.output,
    )
    .await;
    display.finish();
    mirror.shutdown().await;
    conclude(&summary, written, &args.output)
}

/// The exit code, and what became of the archive.
fn conclude(
    summary: &ferry_sync::Summary,
    written: Result<(), ferry_sync::archive::ArchiveError>,
    output: &std::path::Path,
) -> ExitCode {
    let code = report(summary);
    match written {
        Err(e) => {
            eprintln!("error: writing {}: {e}", output.display());
            ExitCode::from(1)
        }
        Ok(()) if summary.has_failures() || summary.was_cancelled() => {
            eprintln!(
                "{} not written; what is complete stays in {} and a re-run resumes from it",
                output.display(),
                staging_dir(output).display()
            );
            code
        }
        Ok(()) => {
            println!(
                "exported {} images to {}",
                summary.images.len(),
                output.display()
            );
            code
        }
    }
}
