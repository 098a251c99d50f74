//! What Machine ID's command-line tools (`tctl`, `tsh`) share, as ripgrep's `grep-cli` does for
//! `rg`: nothing about the cluster, only the plumbing of a command-line program.
//!
//! - [`init_logging`]: the `tracing` subscriber, to stderr. Libraries never install one; only
//!   binaries call this.
//! - [`print()`]: writes to stdout; a closed pipe (`tctl get roles | head -1`) is not an error.
//! - [`run`]: runs a command on a current-thread runtime and maps its result to the exit code,
//!   printing an error as `ERROR: <message>` (with its causes) on stderr.
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! fn main() -> ExitCode {
//!     machine_id_cli::init_logging(false);
//!     machine_id_cli::run(async {
//!         machine_id_cli::print("hello\n")?;
//!         Ok::<(), machine_id_cli::StdoutError>(())
//!     })
//! }
//! ```
#![forbid(unsafe_code)]

use std::fmt::Display;
use std::future::Future;
use std::io::Write;
use std::process::ExitCode;

/// Writing to stdout failed for another reason than a closed pipe.
#[derive(Debug, thiserror::Error)]
#[error("writing to stdout")]
pub struct StdoutError(#[source] pub std::io::Error);

/// Installs the `tracing` subscriber: to stderr, at `debug` with `-d` (`debug`), else `warn`;
/// `RUST_LOG` overrides either.
pub fn init_logging(debug: bool) {
    let filter = if debug { "debug" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Writes `text` to stdout and flushes. A closed pipe is not an error: the reader has what it
/// wanted.
pub fn print(text: &str) -> Result<(), StdoutError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(StdoutError(e)),
        _ => Ok(()),
    }
}

/// Runs `command` on a current-thread runtime. Success exits 0; an error prints as
/// `ERROR: {error:#}` on stderr (with `anyhow`, the error and its causes) and exits 1, as does
/// a runtime that cannot start.
pub fn run<E: Display>(command: impl Future<Output = Result<(), E>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            ExitCode::FAILURE
        }
    }
}
