//! `ferry check-config FILE`: load and validate a config, print every problem by key and line.

use std::path::Path;
use std::process::ExitCode;

use ferry_config::Config;

/// Exit 0 when valid, 2 (with every error on stderr) when not.
pub fn run(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            println!(
                "{}: OK ({} upstreams, default {}, listening on {})",
                file.display(),
                c.upstreams.len(),
                c.default_upstream,
                c.listen
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            let n = errors.errors.len();
            eprintln!(
                "{} error{} in {}",
                n,
                if n == 1 { "" } else { "s" },
                file.display()
            );
            ExitCode::from(2)
        }
    }
}
