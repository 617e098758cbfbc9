//! `ferry copy` ends named the way skopeo names its transports: `docker://REF` (or a plain
//! reference), `oci:DIR[:REF]`, `oci-archive:FILE[:REF]` and `docker-archive:FILE[:REF]`. The
//! path ends at the first `:` after the transport; what follows names the image inside (an
//! `org.opencontainers.image.ref.name`, or a docker-save `RepoTags` entry). A copy with a
//! local end runs the same [`Walk`] as a registry copy over a [`MixedTransfer`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ferry_oci::{ImageRef, Reference, Tag};
use ferry_upstream::Upstream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::layout::IndexEntry;
use super::local::LocalImage;
use super::mixed::{Dst, MixedTransfer, Src};
use super::sink::{LocalSink, SinkKind};
use crate::copy::{CopyOptions, Side};
use crate::error::SyncError;
use crate::progress::{Event, Reporter};
use crate::summary::ImageResult;
use crate::walk::Walk;

/// One end of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A registry image.
    Registry(ImageRef),
    /// `oci:DIR[:REF]`.
    Oci(PathBuf, Option<String>),
    /// `oci-archive:FILE[:REF]`.
    OciArchive(PathBuf, Option<String>),
    /// `docker-archive:FILE[:REF]`.
    DockerArchive(PathBuf, Option<String>),
}

impl Location {
    /// Parses a copy end.
    pub fn parse(s: &str) -> Result<Location, String> {
        let local = |rest: &str| -> Result<(PathBuf, Option<String>), String> {
            let (path, name) = match rest.split_once(':') {
                Some((p, n)) => (p, Some(n.to_owned()).filter(|n| !n.is_empty())),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(format!("{s:?} names no path"));
            }
            Ok((PathBuf::from(path), name))
        };
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (p, n) = local(rest)?;
            return Ok(Location::OciArchive(p, n));
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (p, n) = local(rest)?;
            return Ok(Location::DockerArchive(p, n));
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (p, n) = local(rest)?;
            return Ok(Location::Oci(p, n));
        }
        let r = s.strip_prefix("docker://").unwrap_or(s);
        ImageRef::parse(r)
            .map(Location::Registry)
            .map_err(|e| format!("{s:?}: {e}"))
    }

    /// The registry image, for a registry end.
    pub fn image(&self) -> Option<&ImageRef> {
        match self {
            Location::Registry(r) => Some(r),
            _ => None,
        }
    }

    /// The name given after the path, for a local end.
    fn local_name(&self) -> Option<&str> {
        match self {
            Location::Registry(_) => None,
            Location::Oci(_, n) | Location::OciArchive(_, n) | Location::DockerArchive(_, n) => {
                n.as_deref()
            }
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (t, p, n) = match self {
            Location::Registry(r) => return write!(f, "{r}"),
            Location::Oci(p, n) => ("oci", p, n),
            Location::OciArchive(p, n) => ("oci-archive", p, n),
            Location::DockerArchive(p, n) => ("docker-archive", p, n),
        };
        write!(f, "{t}:{}", p.display())?;
        n.as_ref().map_or(Ok(()), |n| write!(f, ":{n}"))
    }
}

/// A copy end, opened: the transfer side and what to call the image there.
struct Opened {
    src: Src,
    reference: Reference,
    name: Option<String>,
}

fn open_src(loc: &Location, client: Option<Arc<Upstream>>) -> Result<Opened, SyncError> {
    let local = |img: LocalImage| Opened {
        reference: Reference::Digest(img.top.clone()),
        name: img.name.clone(),
        src: Src::Local(Arc::new(img)),
    };
    let usage = |e: super::ArchiveError| SyncError::Usage(e.to_string());
    Ok(match loc {
        Location::Registry(r) => Opened {
            src: Src::Registry(Side {
                client: client.ok_or_else(|| SyncError::Usage("no source client".into()))?,
                repo: r.repository.clone(),
            }),
            reference: r.reference(),
            name: Some(r.to_string()),
        },
        Location::Oci(dir, n) => local(LocalImage::open_oci_dir(dir, n.as_deref()).map_err(usage)?),
        Location::OciArchive(f, n) | Location::DockerArchive(f, n) => {
            local(LocalImage::open_archive(f, n.as_deref()).map_err(usage)?)
        }
    })
}

/// The tag a registry destination gets: its own, else the source's.
fn registry_tag(dst: &ImageRef, src_name: Option<&str>) -> Result<Reference, SyncError> {
    if let Some(t) = &dst.tag {
        return Ok(Reference::Tag(t.clone()));
    }
    let tag = src_name
        .and_then(|n| ImageRef::parse(n).ok())
        .and_then(|r| r.tag)
        .or_else(|| src_name.and_then(|n| Tag::parse(n).ok()));
    tag.map(Reference::Tag)
        .ok_or_else(|| SyncError::Usage(format!("{dst}: name a tag for the destination")))
}

/// Copies between `src` and `dst`, at least one of them local; returns the result and the
/// name the image got at the destination.
pub async fn copy_local(
    (src, src_client): (&Location, Option<Arc<Upstream>>),
    (dst, dst_client): (&Location, Option<Arc<Upstream>>),
    opts: &CopyOptions,
    reporter: Arc<dyn Reporter>,
    cancel: CancellationToken,
) -> ImageResult {
    let label: Arc<str> = format!("{src} -> {dst}").into();
    let start = Instant::now();
    reporter.event(Event::ImageStarted {
        image: label.clone(),
    });
    let result = tokio::select! {
        r = run(src, src_client, dst, dst_client, opts, (&label, &reporter)) => r,
        () = cancel.cancelled() => Err(SyncError::Cancelled),
    };
    reporter.event(Event::ImageDone {
        image: label.clone(),
        result: result.clone(),
    });
    ImageResult {
        image: label.to_string(),
        result,
        elapsed: start.elapsed(),
    }
}

async fn run(
    src: &Location,
    src_client: Option<Arc<Upstream>>,
    dst: &Location,
    dst_client: Option<Arc<Upstream>>,
    opts: &CopyOptions,
    (label, reporter): (&Arc<str>, &Arc<dyn Reporter>),
) -> Result<crate::summary::ImageStats, SyncError> {
    let opened = {
        let (s, c) = (src.clone(), src_client);
        tokio::task::spawn_blocking(move || open_src(&s, c))
            .await
            .map_err(|e| SyncError::Usage(e.to_string()))??
    };
    let (dst_side, sink, publish_as) = open_dst(dst, dst_client, &opened)?;
    let transfer = MixedTransfer::new(opened.src, dst_side, opts.chunk_size, publish_as.clone());
    let walk = Walk {
        image: label.clone(),
        reporter: reporter.clone(),
        platforms: opts.platform.iter().cloned().collect(),
        single_platform: true,
        retry: opts.retry,
        permits: Arc::new(Semaphore::new(opts.jobs.max(1))),
        parallel: opts.jobs.max(1),
        // Archives carry the images only; referrers travel between registries.
        with_referrers: false,
    };
    let stats = walk.run(&transfer, &opened.reference, &publish_as).await?;
    if let Some(sink) = sink {
        let top = transfer.published.lock().expect("published lock").take();
        finish(sink, dst, top, opened.name).await?;
    }
    Ok(stats)
}

fn storage(e: super::ArchiveError) -> SyncError {
    SyncError::Storage(e.to_string())
}

/// The destination side, its local sink (for a local end) and the reference to publish under.
fn open_dst(
    dst: &Location,
    client: Option<Arc<Upstream>>,
    opened: &Opened,
) -> Result<(Dst, Option<LocalSink>, Reference), SyncError> {
    let kind = match dst {
        Location::Registry(r) => {
            let client = client.ok_or_else(|| SyncError::Usage("no destination client".into()))?;
            let side = Side {
                client,
                repo: r.repository.clone(),
            };
            let tag = registry_tag(r, opened.name.as_deref())?;
            return Ok((Dst::Registry(side), None, tag));
        }
        Location::Oci(..) => SinkKind::OciDir,
        Location::OciArchive(f, _) => SinkKind::OciArchive(f.clone()),
        Location::DockerArchive(f, _) => SinkKind::DockerArchive(f.clone()),
    };
    let dir = match dst {
        Location::Oci(d, _) => Some(d.as_path()),
        _ => None,
    };
    let sink = LocalSink::new(kind, dir).map_err(storage)?;
    let layout = Arc::new(sink.layout.clone_handle());
    Ok((Dst::Local(layout), Some(sink), opened.reference.clone()))
}

/// Names the published image in a local destination and writes it out.
async fn finish(
    sink: LocalSink,
    dst: &Location,
    top: Option<crate::walk::Fetched>,
    src_name: Option<String>,
) -> Result<(), SyncError> {
    let top = top.ok_or_else(|| SyncError::Invalid("no manifest was published".into()))?;
    let name = dst
        .local_name()
        .map(str::to_owned)
        .or(src_name)
        .ok_or_else(|| SyncError::Usage(format!("{dst}: name the image after the path")))?;
    let entry = IndexEntry {
        name,
        size: top.bytes.len() as u64,
        digest: top.digest,
        media_type: top.media_type,
    };
    tokio::task::spawn_blocking(move || sink.finish(&entry))
        .await
        .map_err(|e| SyncError::Storage(e.to_string()))?
        .map_err(storage)
}
