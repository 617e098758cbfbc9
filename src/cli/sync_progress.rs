//! The progress display of `ferry sync` and `ferry copy`: indicatif bars on a terminal (a bar
//! per image in progress, a bar per blob downloading under it, a count of images at the top),
//! plain log lines otherwise (CI logs, pipes). Both render the engine's [`Event`]s; the summary
//! table is printed by the commands after the run.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::ValueEnum;
use ferry_oci::Digest;
use ferry_sync::summary::human_bytes;
use ferry_sync::{BlobOutcome, Event, ImageStats, Reporter, SyncError};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How to show progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    /// Bars when stderr is a terminal, else plain lines.
    #[default]
    Auto,
    /// Progress bars.
    Bars,
    /// One line per event worth logging.
    Plain,
}

impl ProgressArg {
    /// Whether to draw bars.
    pub fn bars(self) -> bool {
        match self {
            ProgressArg::Auto => std::io::stderr().is_terminal(),
            ProgressArg::Bars => true,
            ProgressArg::Plain => false,
        }
    }
}

/// Renders events as bars or lines.
pub struct Display {
    bars: Option<MultiProgress>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    total: usize,
    done: usize,
    overall: Option<ProgressBar>,
    images: HashMap<Arc<str>, ProgressBar>,
    blobs: HashMap<(Arc<str>, Digest), ProgressBar>,
}

impl Display {
    /// A display; `bars` chooses progress bars over plain lines.
    pub fn new(bars: bool) -> Arc<Self> {
        let bars = bars.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Arc::new(Display {
            bars,
            state: Mutex::new(State::default()),
        })
    }

    /// Clears the bars (before the summary is printed).
    pub fn finish(&self) {
        let mut st = self.state.lock().expect("display lock");
        for (_, b) in st.blobs.drain() {
            b.finish_and_clear();
        }
        for (_, b) in st.images.drain() {
            b.finish_and_clear();
        }
        if let Some(o) = st.overall.take() {
            o.finish_and_clear();
        }
    }

    fn line(&self, text: String) {
        match &self.bars {
            Some(mp) => {
                let _ = mp.println(text);
            }
            None => eprintln!("{text}"),
        }
    }
}

impl Reporter for Display {
    fn event(&self, event: Event) {
        let mut st = self.state.lock().expect("display lock");
        match &self.bars {
            Some(mp) => bars_event(self, mp, &mut st, event),
            None => plain_event(self, &mut st, event),
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("valid progress template")
        .progress_chars("=> ")
}

fn bars_event(d: &Display, mp: &MultiProgress, st: &mut State, event: Event) {
    match event {
        Event::Planned { images } => {
            st.total = images;
            let o = mp.add(ProgressBar::new(images as u64));
            o.set_style(style("{spinner} {pos}/{len} images  {elapsed}  {wide_msg}"));
            o.enable_steady_tick(Duration::from_millis(200));
            st.overall = Some(o);
        }
        Event::ImageStarted { image } => {
            let b = mp.add(ProgressBar::new_spinner());
            b.set_style(style("{spinner} {wide_msg}"));
            b.set_message(format!("{image}: reading manifests"));
            b.enable_steady_tick(Duration::from_millis(200));
            st.images.insert(image, b);
        }
        Event::ImageResolved {
            image,
            manifests,
            blobs,
            bytes,
        } => {
            let what = format!("{image} ({manifests} manifests, {blobs} blobs)");
            image_resolved(st, &image, what, bytes);
        }
        Event::BlobStarted {
            image,
            digest,
            size,
        } => blob_started(mp, st, image, digest, size),
        Event::BlobProgress {
            image,
            digest,
            bytes,
        } => {
            if let Some(b) = st.blobs.get(&(image.clone(), digest)) {
                b.inc(bytes);
            }
            if let Some(ib) = st.images.get(&image) {
                ib.inc(bytes);
            }
        }
        Event::BlobDone {
            image,
            digest,
            size,
            outcome,
        } => blob_done(st, image, digest, size, outcome),
        Event::Retrying { .. } => d.line(retry_line(&event)),
        Event::ImageDone { image, result } => {
            image_done(st, &image);
            d.line(done_line(&image, &result, None));
        }
    }
}

/// An image's spinner becomes a byte bar once its blobs are known.
fn image_resolved(st: &State, image: &Arc<str>, what: String, bytes: u64) {
    if let Some(b) = st.images.get(image) {
        b.disable_steady_tick();
        b.set_style(style(
            "{wide_msg} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} [{bar:20}]",
        ));
        b.set_length(bytes);
        b.set_message(what);
    }
}

/// A blob bar under its image's bar (a restarted blob takes its bytes back from the image).
fn blob_started(mp: &MultiProgress, st: &mut State, image: Arc<str>, digest: Digest, size: u64) {
    let key = (image.clone(), digest.clone());
    if let Some(old) = st.blobs.remove(&key) {
        if let Some(ib) = st.images.get(&image) {
            ib.set_position(ib.position().saturating_sub(old.position()));
        }
        old.finish_and_clear();
    }
    let Some(ib) = st.images.get(&image) else {
        return;
    };
    let b = mp.insert_after(ib, ProgressBar::new(size));
    b.set_style(style(
        "  {wide_msg} {bytes:>10}/{total_bytes:<10} [{bar:20}]",
    ));
    b.set_message(short(&digest));
    st.blobs.insert(key, b);
}

/// Clears a blob's bar; a blob that was not fetched (or had no bar) counts on its image's bar
/// at once.
fn blob_done(st: &mut State, image: Arc<str>, digest: Digest, size: u64, outcome: BlobOutcome) {
    let started = st.blobs.remove(&(image.clone(), digest));
    if let Some(b) = &started {
        b.finish_and_clear();
    }
    if let Some(ib) = st.images.get(&image)
        && (started.is_none() || outcome != BlobOutcome::Fetched)
    {
        ib.inc(size);
    }
}

/// Clears an image's bar and its blobs' bars, and counts it on the overall bar.
fn image_done(st: &mut State, image: &Arc<str>) {
    if let Some(b) = st.images.remove(image) {
        b.finish_and_clear();
    }
    st.blobs.retain(|(i, _), b| {
        let keep = i != image;
        if !keep {
            b.finish_and_clear();
        }
        keep
    });
    st.done += 1;
    if let Some(o) = &st.overall {
        o.inc(1);
    }
}

fn plain_event(d: &Display, st: &mut State, event: Event) {
    match event {
        Event::Planned { images } => {
            st.total = images;
            d.line(format!("{images} images to transfer"));
        }
        Event::ImageResolved {
            image,
            manifests,
            blobs,
            bytes,
        } => d.line(format!(
            "{image}: {manifests} manifests, {blobs} blobs, {}",
            human_bytes(bytes)
        )),
        Event::BlobDone {
            image,
            digest,
            size,
            outcome: BlobOutcome::Fetched,
        } => d.line(format!(
            "{image}: fetched blob {digest} ({})",
            human_bytes(size)
        )),
        Event::BlobDone {
            image,
            digest,
            outcome: BlobOutcome::Mounted,
            ..
        } => d.line(format!("{image}: mounted blob {digest}")),
        Event::Retrying { .. } => d.line(retry_line(&event)),
        Event::ImageDone { image, result } => {
            st.done += 1;
            let n = format!("[{}/{}] ", st.done, st.total.max(st.done));
            d.line(done_line(&image, &result, Some(&n)));
        }
        _ => {}
    }
}

fn retry_line(event: &Event) -> String {
    let Event::Retrying {
        image,
        what,
        attempt,
        wait,
        error,
    } = event
    else {
        return String::new();
    };
    format!(
        "{image}: {what} failed ({error}); retry {attempt} in {:.1}s",
        wait.as_secs_f64()
    )
}

fn done_line(image: &str, result: &Result<ImageStats, SyncError>, prefix: Option<&str>) -> String {
    let prefix = prefix.unwrap_or("");
    match result {
        Ok(s) => {
            let mounted = match s.blobs_mounted {
                0 => String::new(),
                n => format!(", {n} mounted"),
            };
            format!(
                "{prefix}{image}: ok ({} blobs fetched, {} already there{mounted}, {})",
                s.blobs_fetched,
                s.blobs_present,
                human_bytes(s.bytes_fetched)
            )
        }
        Err(e) => format!("{prefix}{image}: FAILED: {e}"),
    }
}

/// `sha256:0123456789ab` (enough to tell blobs apart on screen).
fn short(d: &Digest) -> String {
    let hex = d.hex();
    format!("{}:{}", d.algorithm().as_str(), &hex[..12.min(hex.len())])
}
