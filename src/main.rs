//! `ferry`: a container registry mirror. This binary is a thin shell over the library crates:
//! it parses the command line, loads the config and hands over to the subcommand.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad config.

mod cli;
mod logging;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: it reuses freed memory in place, where glibc's
/// malloc returns large network buffers to the kernel and faults fresh zeroed pages in for the
/// next ones (measured on the cold path), and its small allocations are cheaper on the request
/// path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(cli::run(args));
    // Do not wait for idle keep-alive connections or detached downloads at exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}
