//! `ferry client-config docker|containerd|podman --mirror URL`: client configuration for this
//! ferry's upstreams, printed or written under a directory.

use std::path::PathBuf;
use std::process::ExitCode;

use ferry_clientcfg::{Client, Target, Upstream, WriteError, WriteOptions, generate};
use ferry_config::Config;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which client: docker, containerd or podman.
    client: String,
    /// The URL clients reach ferry at, e.g. http://mirror.example.com:5000.
    #[arg(long)]
    mirror: String,
    /// ferry's configuration file (its upstreams, default upstream and hosts); the embedded
    /// default when absent.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Write the files under this directory (e.g. / for the real locations) instead of printing.
    #[arg(long)]
    write: Option<PathBuf>,
    /// With --write: replace files ferry did not generate (a backup is kept).
    #[arg(long)]
    force: bool,
    /// Point clients only at ferry, with no direct fallback to the registries (containerd, podman).
    #[arg(long)]
    no_direct_fallback: bool,
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    let client: Client = match args.client.parse() {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    let config = match &args.config {
        Some(p) => Config::load(p),
        None => Config::embedded(),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    let upstreams = config
        .upstreams
        .iter()
        .map(|(n, u)| Upstream::new(n.clone()).with_aliases(u.aliases.clone()));
    let target = Target::new(
        &args.mirror,
        upstreams,
        Some(config.default_upstream.as_str()),
    )
    .and_then(|t| t.with_hosts(config.hosts.clone()))
    .map(|t| t.with_direct_fallback(!args.no_direct_fallback));
    let out = match target.and_then(|t| generate(client, &t)) {
        Ok(o) => o,
        Err(e) => return usage(&e),
    };
    for n in &out.notes {
        eprintln!("note: {n}");
    }
    let Some(dir) = args.write else {
        print!("{}", out.render());
        return ExitCode::SUCCESS;
    };
    match out.write(&dir, &WriteOptions { force: args.force }) {
        Ok(written) => {
            for w in written {
                println!("{w}");
            }
            for s in &out.snippets {
                println!("# add to {}\n{}", s.title, s.contents);
            }
            ExitCode::SUCCESS
        }
        Err(e @ WriteError::Conflicts(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}
