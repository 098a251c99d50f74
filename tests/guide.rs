//! The guide's moving parts for end-to-end suites: what `tctl bots add` printed, `tbot start`
//! arguments, and a real OpenSSH node (`sshd` on loopback trusting the cluster's user CA, with
//! a host certificate from `tctl auth sign`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::AuthServer;

/// What `tctl bots add` printed: the token and the (first) CA pin.
#[derive(Debug, Clone)]
pub struct BotJoin {
    /// The join token.
    pub token: String,
    /// `sha256:<hex>`.
    pub pin: String,
}

/// Runs `tctl bots add NAME --roles=ROLES` and reads the token and pin from its output.
pub fn add_bot(auth: &AuthServer, name: &str, roles: &str) -> BotJoin {
    let out = auth
        .tctl(&["bots", "add", name, &format!("--roles={roles}")])
        .success();
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("The bot token: "))
        .expect("token line")
        .trim()
        .to_string();
    let pin = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("--ca-pin="))
        .expect("ca pin")
        .to_string();
    BotJoin { token, pin }
}

/// `tbot start --data-dir D --destination-dir DEST --token T --ca-pin P --auth-server A`.
pub fn tbot_start_args(auth: &AuthServer, join: &BotJoin, data: &Path, dest: &Path) -> Vec<String> {
    vec![
        "start".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--destination-dir".into(),
        dest.display().to_string(),
        "--token".into(),
        join.token.clone(),
        "--ca-pin".into(),
        join.pin.clone(),
        "--auth-server".into(),
        auth.addr.clone(),
    ]
}

/// `GET path` from `addr` (`host:port`) over plain HTTP/1.1: the status code (0 when the
/// answer has none) and the whole response, headers included.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect(addr).expect("connecting to the diagnostics listener");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("sending the request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("reading the response");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// How long a wait may take before a test calls it a hang: far above what a loaded 2-core
/// machine takes, so that it only ever catches a hang, never slowness.
pub const HANG: Duration = Duration::from_secs(120);

/// Polls `f` until it holds, for up to `limit` (a bound that catches hangs, usually
/// [`HANG`]); panics with `what` otherwise.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real OpenSSH `sshd` on `127.0.0.1`, a node of the cluster: `TrustedUserCAKeys` is the
/// cluster's user CA (`tctl auth export --type=user`), its host key and certificate come from
/// `tctl auth sign --host=NAME --format=openssh`. Killed when dropped.
///
/// The host key and certificate live in `hostkey/`, a symlink to a directory of its own, so
/// that [`Sshd::resign_host`] swaps both at once (one rename) while sshd serves: each
/// connection's re-executed sshd reads them afresh, and never a new key with an old
/// certificate.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    dir: PathBuf,
    name: String,
    signed: std::sync::atomic::AtomicU32,
}

/// Where `sshd` lives on Debian.
pub const SSHD: &str = "/usr/sbin/sshd";

impl Sshd {
    /// Starts a node called `name` whose files live under `dir`.
    pub fn start(auth: &AuthServer, name: &str, dir: &Path) -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: apt-get install openssh-server (tests/test.sh does)"
        );
        std::fs::create_dir_all(dir).expect("sshd dir");
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let port = free_port();
        let config = dir.join("sshd_config");
        install_user_cas_in(auth, dir);
        sign_host_in(auth, name, dir, 0);
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/hostkey/node\nHostCertificate {d}/hostkey/node-cert.pub\n\
                 TrustedUserCAKeys {d}/user_ca.pub\nAuthorizedKeysFile none\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {d}/sshd.pid\n\
                 MaxStartups 100\nMaxSessions 100\nLogLevel VERBOSE\n",
                d = dir.display()
            ),
        )
        .expect("sshd_config");
        let log = std::fs::File::create(dir.join("sshd.log")).expect("sshd log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting sshd");
        let addr = format!("127.0.0.1:{port}");
        let mut node = Self {
            child,
            addr,
            dir: dir.to_path_buf(),
            name: name.to_string(),
            signed: std::sync::atomic::AtomicU32::new(0),
        };
        let started = Instant::now();
        while TcpStream::connect(&node.addr).is_err() {
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("sshd exited ({status}):\n{}", node.log());
            }
            assert!(
                started.elapsed() < HANG,
                "sshd did not listen on {}:\n{}",
                node.addr,
                node.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        node
    }

    /// Writes what `tctl auth export --type=user` prints now (every trusted user CA key) to
    /// the node's `TrustedUserCAKeys` file, replacing it in one rename.
    pub fn install_user_cas(&self, auth: &AuthServer) {
        install_user_cas_in(auth, &self.dir);
    }

    /// Signs a new host key and certificate with `tctl auth sign` (the host CA's active key)
    /// and switches the node to them in one rename, while sshd serves.
    pub fn resign_host(&self, auth: &AuthServer) {
        let n = self
            .signed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        sign_host_in(auth, &self.name, &self.dir, n);
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

/// `tctl auth export --type=user` into `dir/user_ca.pub`, by rename.
fn install_user_cas_in(auth: &AuthServer, dir: &Path) {
    let user_ca = auth.tctl(&["auth", "export", "--type=user"]).success();
    let tmp = dir.join("user_ca.pub.tmp");
    std::fs::write(&tmp, user_ca).expect("user CA file");
    std::fs::rename(&tmp, dir.join("user_ca.pub")).expect("user CA file in place");
}

/// `tctl auth sign --host=NAME` into `dir/hostkey-N/node`, then `dir/hostkey` pointed at it
/// by one rename.
fn sign_host_in(auth: &AuthServer, name: &str, dir: &Path, n: u32) {
    let keys = dir.join(format!("hostkey-{n}"));
    std::fs::create_dir_all(&keys).expect("host key dir");
    auth.tctl(&[
        "auth",
        "sign",
        &format!("--host={name}"),
        "--format=openssh",
        &format!("--out={}", keys.join("node").display()),
    ])
    .success();
    let link = dir.join(format!("hostkey-{n}.link"));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&keys, &link).expect("host key symlink");
    std::fs::rename(&link, dir.join("hostkey")).expect("host key symlink in place");
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `ssh -F CONFIG [extra...] DESTINATION COMMAND...` (stdin closed) with a time limit.
pub fn ssh(config: &Path, destination: &str, command: &[&str]) -> crate::Output {
    // `timeout` only catches a hang (HANG).
    let mut args: Vec<String> = vec![
        HANG.as_secs().to_string(),
        "ssh".into(),
        "-F".into(),
        config.display().to_string(),
        destination.into(),
    ];
    args.extend(command.iter().map(|s| (*s).to_string()));
    let out = Command::new("timeout")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("running ssh");
    crate::Output {
        command: args[1..].join(" "),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
