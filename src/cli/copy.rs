//! `ferry copy SRC DST`: copies one image, or a whole index (all platforms, or one with
//! `--platform`), from any registry to any registry, or to and from local files named as
//! skopeo names them (`oci:`, `oci-archive:`, `docker-archive:`), with the same progress
//! display and summary as `ferry sync`. Credentials come from `--src-creds`/`--dst-creds`, else from the
//! Docker config file (`--authfile`, `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ferry_config::ByteSize;
use ferry_metrics::Metrics;
use ferry_oci::ImageRef;
use ferry_sync::archive::transports::{Location, copy_local};
use ferry_sync::copy::{CopyOptions, copy_image, destination_reference};
use ferry_sync::creds::{self, Credentials};
use ferry_sync::list::parse_platform;
use ferry_sync::remote::{self, RemoteOptions};
use ferry_sync::{RetryPolicy, Summary};
use tokio_util::sync::CancellationToken;

use super::sync_progress::{Display, ProgressArg};

/// Arguments of `ferry copy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source image, e.g. `127.0.0.1:5001/test/multi:v1` (a `docker://` prefix is accepted), or
    /// local files: `oci:DIR[:REF]`, `oci-archive:FILE[:REF]`, `docker-archive:FILE[:REF]`.
    src: String,
    /// Destination, in the same forms; without a tag, the source's tag (or name) is used.
    dst: String,
    /// Copy only this platform of a multi-platform image (its manifest gets the tag).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    /// Credentials for the source registry.
    #[arg(long, value_name = "USER:PASSWORD", env = "FERRY_COPY_SRC_CREDS")]
    src_creds: Option<String>,
    /// Credentials for the destination registry.
    #[arg(long, value_name = "USER:PASSWORD", env = "FERRY_COPY_DST_CREDS")]
    dst_creds: Option<String>,
    /// Docker config file to read credentials from (default: $DOCKER_CONFIG/config.json,
    /// else ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
    /// Use plain HTTP for every registry (loopback registries always use it).
    #[arg(long)]
    plain_http: bool,
    /// Skip TLS certificate verification.
    #[arg(long)]
    insecure: bool,
    /// Blobs larger than this are uploaded in chunks of this size (PATCH); smaller ones in one PUT.
    #[arg(long, default_value = "64MiB", value_parser = ByteSize::parse)]
    chunk_size: ByteSize,
    /// Blob transfers in parallel.
    #[arg(long, short, default_value_t = 4)]
    jobs: usize,
    /// Attempts per manifest or blob on transient failures (5xx, 429, connection errors).
    #[arg(long, default_value_t = 4)]
    retries: u32,
    /// Progress display.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
}

/// Both ends, parsed and with clients.
struct Ends {
    src: ImageRef,
    dst: ImageRef,
    src_client: Arc<ferry_upstream::Upstream>,
    dst_client: Arc<ferry_upstream::Upstream>,
}

/// Runs `ferry copy`.
pub async fn run(args: Args) -> ExitCode {
    let bars = args.progress.bars();
    crate::logging::init(
        ferry_config::LogFormat::Text,
        if bars { "error" } else { "warn" },
    );
    match (Location::parse(&args.src), Location::parse(&args.dst)) {
        (Ok(Location::Registry(_)), Ok(Location::Registry(_))) => {}
        (Ok(src), Ok(dst)) => return run_local(&args, src, dst, bars).await,
        (Err(m), _) | (_, Err(m)) => {
            eprintln!("error: {m}");
            return ExitCode::from(2);
        }
    }
    let ends = match prepare(&args) {
        Ok(e) => e,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let opts = options(&args);
    let cancel = CancellationToken::new();
    tokio::spawn(super::sync::cancel_on_signal(cancel.clone()));
    let display = Display::new(bars);
    let result = copy_image(
        (&ends.src, ends.src_client),
        (&ends.dst, ends.dst_client),
        &opts,
        display.clone(),
        cancel,
    )
    .await;
    display.finish();
    if let Ok(Some(d)) = result.result.as_ref().map(|s| s.digest.as_ref()) {
        let published = destination_reference(&ends.src, &ends.dst);
        let sep = if published.as_digest().is_some() {
            '@'
        } else {
            ':'
        };
        let (registry, repo) = (&ends.dst.registry, &ends.dst.repository);
        println!("copied {registry}/{repo}{sep}{published} {d}");
    }
    super::sync::report(&Summary {
        images: vec![result],
    })
}

fn options(args: &Args) -> CopyOptions {
    CopyOptions {
        platform: args.platform.clone(),
        chunk_size: args.chunk_size.0.max(1),
        jobs: args.jobs.max(1),
        retry: RetryPolicy {
            attempts: args.retries.max(1),
            ..RetryPolicy::default()
        },
    }
}

/// A copy with a local end (`oci:`, `oci-archive:`, `docker-archive:`).
async fn run_local(args: &Args, src: Location, dst: Location, bars: bool) -> ExitCode {
    let remote = RemoteOptions {
        plain_http: args.plain_http,
        insecure: args.insecure,
    };
    let metrics = Arc::new(Metrics::new());
    let client = |loc: &Location, flag: Option<&str>, push| -> Result<_, String> {
        let Some(r) = loc.image() else {
            return Ok(None);
        };
        let c = credentials(flag, args, &r.registry)?;
        remote::client(&r.registry, c, remote, push, metrics.clone())
            .map(Some)
            .map_err(|e| e.to_string())
    };
    let clients = client(&src, args.src_creds.as_deref(), false)
        .and_then(|s| Ok((s, client(&dst, args.dst_creds.as_deref(), true)?)));
    let (src_client, dst_client) = match (args.platform.as_deref().map(parse_platform), clients) {
        (Some(Err(m)), _) | (_, Err(m)) => {
            eprintln!("error: {m}");
            return ExitCode::from(2);
        }
        (_, Ok(c)) => c,
    };
    let cancel = CancellationToken::new();
    tokio::spawn(super::sync::cancel_on_signal(cancel.clone()));
    let display = Display::new(bars);
    let opts = options(args);
    let result = copy_local(
        (&src, src_client),
        (&dst, dst_client),
        &opts,
        display.clone(),
        cancel,
    )
    .await;
    display.finish();
    if let Ok(Some(d)) = result.result.as_ref().map(|s| s.digest.as_ref()) {
        println!("copied {dst} {d}");
    }
    super::sync::report(&Summary {
        images: vec![result],
    })
}

fn prepare(args: &Args) -> Result<Ends, String> {
    if let Some(p) = &args.platform {
        parse_platform(p)?;
    }
    let src = parse_ref(&args.src, "source")?;
    let dst = parse_ref(&args.dst, "destination")?;
    let remote = RemoteOptions {
        plain_http: args.plain_http,
        insecure: args.insecure,
    };
    let metrics = Arc::new(Metrics::new());
    let src_creds = credentials(args.src_creds.as_deref(), args, &src.registry)?;
    let dst_creds = credentials(args.dst_creds.as_deref(), args, &dst.registry)?;
    let client = |r: &ImageRef, c, push| {
        remote::client(&r.registry, c, remote, push, metrics.clone()).map_err(|e| e.to_string())
    };
    Ok(Ends {
        src_client: client(&src, src_creds, false)?,
        dst_client: client(&dst, dst_creds, true)?,
        src,
        dst,
    })
}

fn parse_ref(s: &str, which: &str) -> Result<ImageRef, String> {
    let s = s.strip_prefix("docker://").unwrap_or(s);
    ImageRef::parse(s).map_err(|e| format!("{which} {s:?}: {e}"))
}

/// Credentials from the flag, else from the Docker config file.
fn credentials(
    flag: Option<&str>,
    args: &Args,
    registry: &str,
) -> Result<Option<Credentials>, String> {
    if let Some(f) = flag {
        return Credentials::parse(f).map(Some);
    }
    let Some(path) = args.authfile.clone().or_else(creds::docker_config_path) else {
        return Ok(None);
    };
    creds::from_docker_config_file(&path, registry)
}
