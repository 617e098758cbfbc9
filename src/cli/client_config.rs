//! `ferry client-config <client> --mirror URL`: client configuration for this ferry's
//! upstreams (Docker, containerd, Podman, CRI-O, BuildKit, k3s, RKE2, Testcontainers), printed
//! or written under a directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ferry_clientcfg::{
    Client, ClientConfig, Conflict, Target, Upstream, WriteError, WriteOptions, generate,
};
use ferry_config::Config;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which client: docker, containerd, podman (also buildah, skopeo), crio, buildkit, k3s,
    /// rke2 or testcontainers.
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
    /// Point clients only at ferry, with no direct fallback to the registries (containerd,
    /// podman, crio, k3s/rke2 with a config.yaml setting; docker and buildkit cannot, see notes).
    #[arg(long)]
    no_direct_fallback: bool,
    /// CA certificate (absolute path on the client machine) of an https:// ferry with a
    /// private CA; written where the client's file can name it (buildkit, containerd, k3s).
    #[arg(long, value_name = "FILE")]
    ca: Option<String>,
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
    .map(|t| t.with_direct_fallback(!args.no_direct_fallback))
    .and_then(|t| match &args.ca {
        Some(ca) => t.with_ca_file(ca),
        None => Ok(t),
    });
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
        Err(WriteError::Conflicts(conflicts)) => {
            print_conflicting(&out, &dir, &conflicts);
            eprintln!("error: {}", WriteError::Conflicts(conflicts));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Prints ferry's version of each file that was not written (on stdout, each after a
/// `# ==> ferry's version of PATH <==` line), so it can be merged by hand.
fn print_conflicting(out: &ClientConfig, root: &Path, conflicts: &[Conflict]) {
    for c in conflicts {
        if let Some(f) = out.files.iter().find(|f| root.join(&f.path) == c.path) {
            println!("# ==> ferry's version of {} <==", c.path.display());
            print!("{}", f.contents);
        }
    }
}

fn usage(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}
