//! End-to-end test harness: starts real processes.
//!
//! - [`binaries`]: builds `auth-server`, `tctl`, `tbot` and `tsh` once per test process
//!   (`cargo build -p auth-server -p tctl-bots -p tbot -p tsh`, in the profile the tests run
//!   in) and finds them in the target directory. `MACHINE_ID_BIN_DIR` points at prebuilt
//!   binaries instead.
//!   [`example`] builds and finds an example program of a workspace crate.
//! - [`AuthServer`]: a real `auth-server start` on `127.0.0.1:0` with a temporary data dir,
//!   killed when dropped; [`AuthServer::tctl`] runs the real `tctl` against it with the admin
//!   identity the server wrote; [`AuthServer::stop`] takes it down and
//!   [`AuthServer::restart_same_addr`] brings it back on the same address and data dir.
//! - [`run_tbot`] / [`spawn_tbot`]: the real `tbot`; [`run_tsh`]: the real `tsh`.
//! - [`moto::Moto`]: a real `moto_server` (the AWS mock) on a free loopback port, for the IAM
//!   join: STS `AssumeRole` and `GetCallerIdentity`.
//!
//! ```no_run
//! let auth = machine_id_e2e::AuthServer::start();
//! let out = auth.tctl(&["get", "roles"]).success();
//! assert!(out.contains("access"));
//! ```
#![forbid(unsafe_code)]

pub mod guide;
pub mod moto;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

/// Where the binaries under test are.
#[derive(Debug)]
pub struct Binaries {
    /// `auth-server`.
    pub auth_server: PathBuf,
    /// `tctl`.
    pub tctl: PathBuf,
    /// `tbot`.
    pub tbot: PathBuf,
    /// `tsh`.
    pub tsh: PathBuf,
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Builds (once per process) and locates `auth-server`, `tctl`, `tbot` and `tsh`.
///
/// The test binary lives in `<target>/<profile>/deps/`; the binaries are built into
/// `<target>/<profile>/` with the same profile.
pub fn binaries() -> &'static Binaries {
    // A failed build is remembered too, so one failure does not rebuild for every test.
    static BINS: OnceLock<Result<Binaries, String>> = OnceLock::new();
    let bins = BINS.get_or_init(|| {
        let dir = match std::env::var_os("MACHINE_ID_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => build_binaries()?,
        };
        let bins = Binaries {
            auth_server: dir.join("auth-server"),
            tctl: dir.join("tctl"),
            tbot: dir.join("tbot"),
            tsh: dir.join("tsh"),
        };
        for b in [&bins.auth_server, &bins.tctl, &bins.tbot, &bins.tsh] {
            if !b.exists() {
                return Err(format!("{} does not exist", b.display()));
            }
        }
        Ok(bins)
    });
    match bins {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

/// `(<target>/<profile>, <target>, <profile>)` of the running test binary.
fn profile_dirs() -> Result<(PathBuf, PathBuf, String), String> {
    let exe = std::env::current_exe().map_err(|e| format!("the test binary's path: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the test binary does not sit in <target>/<profile>/deps")?
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .ok_or("no <target> above <target>/<profile>")?
        .to_path_buf();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    Ok((profile_dir, target_dir, profile))
}

/// Runs `cargo build -q ARGS` in the workspace, in the running tests' target dir and
/// profile; returns `<target>/<profile>`.
fn cargo_build(args: &[&str]) -> Result<PathBuf, String> {
    let (profile_dir, target_dir, profile) = profile_dirs()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "-q"])
        .args(args)
        .arg("--target-dir")
        .arg(&target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd
        .status()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build {} failed", args.join(" ")));
    }
    Ok(profile_dir)
}

/// Builds example `name` of `package` (in the tests' profile) and returns its path.
pub fn example(package: &str, name: &str) -> PathBuf {
    match cargo_build(&["-p", package, "--example", name]) {
        Ok(dir) => dir.join("examples").join(name),
        Err(e) => panic!("{e}"),
    }
}

fn build_binaries() -> Result<PathBuf, String> {
    cargo_build(&[
        "-p",
        "auth-server",
        "-p",
        "tctl-bots",
        "-p",
        "tbot",
        "-p",
        "tsh",
    ])
    .map_err(|e| format!("{e} (set MACHINE_ID_BIN_DIR to use prebuilt binaries)"))
}

/// A running `auth-server`, killed on drop.
#[derive(Debug)]
pub struct AuthServer {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The cluster name.
    pub cluster: String,
    data_dir: tempfile::TempDir,
    /// Flags added to every `auth-server start` of this server.
    extra_args: Vec<String>,
}

/// What a `tctl` run printed.
#[derive(Debug)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Output {
    /// Asserts the command succeeded; returns stdout.
    #[track_caller]
    pub fn success(&self) -> String {
        assert_eq!(
            self.code, 0,
            "`{}` failed (exit {}):\nstdout:\n{}\nstderr:\n{}",
            self.command, self.code, self.stdout, self.stderr
        );
        self.stdout.clone()
    }

    /// Asserts the command failed with exit code 1 and an `ERROR: ` line; returns stderr.
    #[track_caller]
    pub fn failure(&self) -> String {
        assert_eq!(
            self.code, 1,
            "`{}` should fail with exit 1 (got {}):\nstdout:\n{}\nstderr:\n{}",
            self.command, self.code, self.stdout, self.stderr
        );
        assert!(
            self.stderr.starts_with("ERROR: ") || self.stderr.contains("\nERROR: "),
            "`{}`: no ERROR line in stderr:\n{}",
            self.command,
            self.stderr
        );
        self.stderr.clone()
    }
}

/// How long the server may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The line the server prints when it listens.
const READY_PREFIX: &str = "auth server ready on ";

impl AuthServer {
    /// Starts a server for cluster `example.com`.
    pub fn start() -> Self {
        Self::start_cluster("example.com")
    }

    /// Starts a server for `cluster` in a fresh data dir, on a free loopback port.
    pub fn start_cluster(cluster: &str) -> Self {
        Self::start_with_args(cluster, &[])
    }

    /// Starts a server for `cluster` with extra `auth-server start` flags (e.g.
    /// `--extra-sts-endpoint URL`), kept for restarts.
    pub fn start_with_args(cluster: &str, extra_args: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self {
            child: None,
            addr: String::new(),
            cluster: cluster.to_string(),
            data_dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    /// Starts the process on this server's data dir (a free port each time) and waits for
    /// its ready line.
    fn spawn(&mut self) {
        self.spawn_on("127.0.0.1:0");
    }

    /// Starts the process on this server's data dir listening on `listen` and waits for its
    /// ready line.
    fn spawn_on(&mut self, listen: &str) {
        let bins = binaries();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.path().join("auth-server.log"))
            .expect("log file");
        let mut child = Command::new(&bins.auth_server)
            .args(["start", "--data-dir"])
            .arg(self.data_dir())
            .args(["--cluster-name", &self.cluster, "--auth-listen", listen])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting auth-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Keeps reading so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.trim().strip_prefix(READY_PREFIX)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(addr) => self.addr = addr,
            Err(_) => {
                let log = self.log();
                panic!("auth-server did not print {READY_PREFIX:?} in time; its log:\n{log}");
            }
        }
    }

    /// Kills the server with SIGKILL (no chance to clean up), as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        child.wait().expect("waiting for auth-server")
    }

    /// Starts the server again on the same data dir (after [`Self::kill9`] or [`Self::stop`]).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts the server again on the same data dir and the same address (after
    /// [`Self::kill9`] or [`Self::stop`]), so clients configured with [`Self::addr`] reconnect.
    pub fn restart_same_addr(&mut self) {
        self.kill9();
        let listen = self.addr.clone();
        self.spawn_on(&listen);
    }

    /// Starts the server again on the same data dir and address with `extra_args` in place
    /// of the flags it was started with (e.g. another `--storage-conn-string`).
    pub fn restart_same_addr_with(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        self.restart_same_addr();
    }

    /// The running server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.path().join("data")
    }

    /// The admin identity directory the server wrote.
    pub fn identity_dir(&self) -> PathBuf {
        self.data_dir().join("admin")
    }

    /// A scratch directory that lives as long as the server.
    pub fn scratch(&self) -> PathBuf {
        let d = self.data_dir.path().join("scratch");
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("auth-server.log")).unwrap_or_default()
    }

    /// Runs `tctl --auth-server ADDR --identity DATA/admin ARGS...`.
    pub fn tctl(&self, args: &[&str]) -> Output {
        let identity = self.identity_dir();
        let mut full: Vec<String> = vec![
            "--auth-server".into(),
            self.addr.clone(),
            "--identity".into(),
            identity.display().to_string(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        run_tctl(&full)
    }
}

/// Runs `tctl` with exactly `args` (no server or identity added), without the environment
/// variables that would change its defaults.
pub fn run_tctl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let bins = binaries();
    let out = Command::new(&bins.tctl)
        .args(args)
        .env_remove("TELEPORT_AUTH_SERVER")
        .env_remove("TCTL_IDENTITY")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("running tctl");
    Output {
        command: format!(
            "tctl {}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `tbot` with `args` (and `env`), without the environment variables that would change
/// its defaults; waits for it to exit.
pub fn run_tbot<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> Output {
    let out = tbot_command(args, env)
        .stdin(Stdio::null())
        .output()
        .expect("running tbot");
    Output {
        command: format!(
            "tbot {}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `tsh` with exactly `args`, without the environment variables that would change its
/// defaults; waits for it to exit.
pub fn run_tsh<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let out = Command::new(&binaries().tsh)
        .args(args)
        .env_remove("TELEPORT_AUTH_SERVER")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("running tsh");
    Output {
        command: format!(
            "tsh {}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Starts `tbot` with `args`, stderr (its log) to `log`; the caller stops it.
pub fn spawn_tbot<S: AsRef<std::ffi::OsStr>>(args: &[S], log: &Path) -> Child {
    spawn_tbot_env(args, &[], log)
}

/// [`spawn_tbot`] with extra environment variables.
pub fn spawn_tbot_env<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    env: &[(&str, &str)],
    log: &Path,
) -> Child {
    let log = std::fs::File::create(log).expect("tbot log file");
    tbot_command(args, env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("starting tbot")
}

fn tbot_command<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(&binaries().tbot);
    cmd.args(args)
        .env_remove("TELEPORT_AUTH_SERVER")
        .env_remove("TELEPORT_BOT_TOKEN")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
