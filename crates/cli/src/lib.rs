//! What Machine ID's command-line tools (`tctl`, `tsh`) share, as ripgrep's `grep-cli` does for
//! `rg`: nothing about the cluster, only the plumbing of a command-line program.
//!
//! - [`init_logging`]: the `tracing` subscriber, to stderr. Libraries never install one; only
//!   binaries call this.
//! - [`print()`]: writes to stdout; a closed pipe (`tctl get roles | head -1`) is not an error.
//! - [`join_repeated_flag`]: turns repeated `--auth-server` flags into one comma-separated
//!   list before clap sees them.
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

/// Joins every occurrence of the flags `names` (spellings of one flag, e.g. `--auth-server`
/// and its alias `--proxy`) in `args` into one `NAME=v1,v2,...` at the place of the first,
/// so a flag that takes a comma-separated list can also be repeated
/// (`--auth-server a:3025 --auth-server b:3025`) while the program's parser keeps one string.
/// Both `--flag value` and `--flag=value` are understood; nothing after `--` is touched, and
/// arguments that are not UTF-8 are passed through as they are. A flag given once is left
/// exactly as it was.
pub fn join_repeated_flag<I>(args: I, names: &[&str]) -> Vec<std::ffi::OsString>
where
    I: IntoIterator,
    I::Item: Into<std::ffi::OsString>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let mut out = Vec::with_capacity(args.len());
    let mut values: Vec<String> = Vec::new();
    let mut first: Option<(usize, String)> = None;
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        i += 1;
        let Some(text) = arg.to_str() else {
            out.push(arg.clone());
            continue;
        };
        if text == "--" {
            out.extend(args[i - 1..].iter().cloned());
            break;
        }
        let found = names.iter().find_map(|n| {
            if text == *n {
                Some((*n, None))
            } else {
                text.strip_prefix(n)
                    .and_then(|rest| rest.strip_prefix('='))
                    .map(|v| (*n, Some(v.to_string())))
            }
        });
        let Some((name, inline)) = found else {
            out.push(arg.clone());
            continue;
        };
        let value = match inline {
            Some(v) => v,
            None => match args.get(i).and_then(|v| v.to_str()) {
                Some(v) => {
                    i += 1;
                    v.to_string()
                }
                // No value: leave it for the parser to report.
                None => {
                    out.push(arg.clone());
                    continue;
                }
            },
        };
        if first.is_none() {
            first = Some((out.len(), name.to_string()));
            out.push(std::ffi::OsString::new());
        }
        values.push(value);
    }
    if let Some((at, name)) = first {
        out[at] = format!("{name}={}", values.join(",")).into();
    }
    out
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

#[cfg(test)]
mod tests {
    use super::join_repeated_flag;

    fn join(args: &[&str]) -> Vec<String> {
        join_repeated_flag(args.iter().copied(), &["--auth-server", "--proxy"])
            .into_iter()
            .map(|a| a.into_string().unwrap_or_default())
            .collect()
    }

    #[test]
    fn repeated_flags_become_one_list_in_place() {
        assert_eq!(
            join(&[
                "tctl",
                "--auth-server",
                "a:1",
                "status",
                "--auth-server=b:1,c:1"
            ]),
            ["tctl", "--auth-server=a:1,b:1,c:1", "status"]
        );
        assert_eq!(
            join(&["tsh", "ls", "--proxy", "a:1", "--auth-server", "b:1"]),
            ["tsh", "ls", "--proxy=a:1,b:1"]
        );
        assert_eq!(join(&["tctl", "status"]), ["tctl", "status"]);
        assert_eq!(
            join(&["tctl", "--auth-server", "a:1", "--", "--auth-server", "x"]),
            ["tctl", "--auth-server=a:1", "--", "--auth-server", "x"]
        );
        // A flag without a value is left for the parser to report.
        assert_eq!(join(&["tctl", "--auth-server"]), ["tctl", "--auth-server"]);
        assert_eq!(
            join(&["tctl", "--auth-serverx=1"]),
            ["tctl", "--auth-serverx=1"]
        );
    }
}
