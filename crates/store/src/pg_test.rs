//! A throwaway PostgreSQL server for tests (feature `conformance`): [`TempPostgres`] runs
//! `initdb` into a temporary directory and `postgres` on a free `127.0.0.1` port, with its
//! Unix socket in the same directory, TLS on (a test CA made with `openssl`), password
//! logins over TCP and trust over the socket.
//!
//! As root it runs `initdb` and `postgres` as the `postgres` user (`runuser -u postgres
//! --`; `initdb` refuses root) and gives it the directory. Binaries come from
//! `$MACHINE_ID_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
//!
//! One server per test binary is enough ([`TempPostgres::shared`]); each test takes its own
//! database ([`TempPostgres::create_fresh_database`]). A test that stops or restarts the
//! server starts its own with [`TempPostgres::start`].
//!
//! The server runs under a small shell that stops it (fast shutdown) when told to, or when
//! the test process exits and its stdin closes; then it also removes the directory, so the
//! shared server does not outlive the test binary. The server runs with `fsync=off` (a
//! crash of the machine is not what the tests are about); commits are still synchronous.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The login role tests connect as (owner of every database they create).
pub const TEST_USER: &str = "machine_id";
/// Its password.
pub const TEST_PASSWORD: &str = "machine-id-test-password";

/// How long the server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `postgres` (arguments after the script: bin dir, data dir, socket dir, port, root
/// dir) until a line or EOF on stdin, or until postgres exits by itself (so a start that
/// fails is seen at once); on EOF (the test process is gone) it also removes the root dir.
const SUPERVISOR: &str = r#"
"$1/postgres" -D "$2" -k "$3" -p "$4" -c listen_addresses=127.0.0.1 >>"$5/postgres.log" 2>&1 &
pid=$!
eof=
while kill -0 "$pid" 2>/dev/null; do
  read -r -t 0.2 _; rc=$?
  if [ "$rc" -eq 0 ]; then break; fi
  if [ "$rc" -le 128 ]; then eof=1; break; fi
done
kill -INT "$pid" 2>/dev/null
wait "$pid"
if [ -n "$eof" ]; then rm -rf "$5"; fi
"#;

/// A PostgreSQL server in a temporary directory, stopped and removed on drop.
pub struct TempPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    server: Mutex<Option<Server>>,
}

struct Server {
    child: Child,
    stdin: ChildStdin,
}

impl std::fmt::Debug for TempPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempPostgres")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Whether tests may skip when PostgreSQL is missing.
fn allow_skip() -> bool {
    std::env::var_os("MACHINE_ID_ALLOW_SKIP").is_some_and(|v| v == "1")
}

impl TempPostgres {
    /// The server shared by every test of this test binary, started on first use; `None`
    /// (after printing why) when PostgreSQL is missing and `MACHINE_ID_ALLOW_SKIP=1`.
    ///
    /// # Panics
    ///
    /// As [`TempPostgres::start`].
    pub fn shared() -> Option<&'static TempPostgres> {
        static SHARED: OnceLock<Option<TempPostgres>> = OnceLock::new();
        SHARED.get_or_init(Self::start).as_ref()
    }

    /// Creates and starts a new server; `None` (after printing why) when PostgreSQL is
    /// missing and `MACHINE_ID_ALLOW_SKIP=1`.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is missing (saying how to install it), or `initdb`, `openssl` or the
    /// server fail (with the server's log).
    pub fn start() -> Option<Self> {
        let Some(bin) = find_bin() else {
            let message = "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin \
                           or $MACHINE_ID_PG_BIN): run `tests/test.sh --setup-only` or \
                           `apt-get install -y postgresql`";
            if allow_skip() {
                eprintln!("skipping a PostgreSQL test (MACHINE_ID_ALLOW_SKIP=1): {message}");
                return None;
            }
            panic!("{message}; or set MACHINE_ID_ALLOW_SKIP=1 to skip PostgreSQL tests");
        };
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("machine-id-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let pg = Self {
            port: 0,
            dir,
            bin,
            as_postgres,
            server: Mutex::new(None),
        };
        let pg = pg.init();
        Some(pg)
    }

    fn init(mut self) -> Self {
        let root = self.dir.path().to_owned();
        std::fs::create_dir(root.join("sock")).unwrap_or_else(|e| panic!("mkdir sock: {e}"));
        std::fs::write(root.join("pwfile"), format!("{TEST_PASSWORD}\n"))
            .unwrap_or_else(|e| panic!("write pwfile: {e}"));
        make_certs(&root);
        if self.as_postgres {
            run(Command::new("chown").arg("-R").arg("postgres:").arg(&root));
        }
        let data = root.join("data");
        run(self
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--no-sync", "--auth-local=trust"])
            .args(["--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"])
            .arg(format!("--pwfile={}", root.join("pwfile").display())));
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap_or_else(|e| panic!("open postgresql.conf: {e}"));
        writeln!(
            conf,
            "\nfsync = off\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n\
             max_connections = 200\nshared_buffers = 32MB\nlog_min_messages = warning\n",
            root.join("server.crt").display(),
            root.join("server.key").display()
        )
        .unwrap_or_else(|e| panic!("write postgresql.conf: {e}"));
        // A port can be taken between choosing and binding it: try a few.
        for attempt in 1..=3 {
            self.port = free_port();
            match self.spawn_and_wait() {
                Ok(()) => break,
                Err(e) if attempt < 3 => eprintln!("postgres did not start ({e}); retrying"),
                Err(e) => panic!("{e}\n{}", self.log()),
            }
        }
        self.admin_sql(&format!(
            "CREATE ROLE {TEST_USER} LOGIN CREATEDB PASSWORD '{TEST_PASSWORD}'"
        ));
        self
    }

    /// A binary of the server, run as `postgres` when this process is root.
    fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn spawn_and_wait(&self) -> Result<(), String> {
        let root = self.dir.path();
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "bash"]);
            c
        } else {
            Command::new("bash")
        };
        let mut child = command
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("bash")
            .arg(&self.bin)
            .arg(root.join("data"))
            .arg(root.join("sock"))
            .arg(self.port.to_string())
            .arg(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| "no stdin pipe to the postgres supervisor".to_owned())?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("postgres exited at start ({status})"));
            }
            let ready = self
                .command("pg_isready")
                .args(["-q", "-h"])
                .arg(root.join("sock"))
                .args(["-p", &self.port.to_string(), "-U", "postgres"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("postgres not ready within {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        *self.lock() = Some(Server { child, stdin });
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Server>> {
        self.server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `sql` as the superuser over the Unix socket (with `psql`).
    fn admin_sql(&self, sql: &str) {
        run(self
            .command("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path().join("sock"))
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-c", sql]));
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the CA that signed the server's certificate (which names `localhost`
    /// only, not `127.0.0.1`, so that `sslmode=verify-full` can be shown to check names).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A URI connecting to `database` as [`TEST_USER`] over TCP without TLS.
    pub fn conn_string(&self, database: &str) -> String {
        format!(
            "postgresql://{TEST_USER}:{TEST_PASSWORD}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// Creates `name`, owned by [`TEST_USER`]; returns [`TempPostgres::conn_string`] for it.
    pub fn create_database(&self, name: &str) -> String {
        self.admin_sql(&format!("CREATE DATABASE \"{name}\" OWNER {TEST_USER}"));
        self.conn_string(name)
    }

    /// Creates a database with a name unused in this process; returns its connection string.
    pub fn create_fresh_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!("test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.create_database(&name)
    }

    /// Stops the server (fast shutdown: sessions are ended); [`TempPostgres::start_again`]
    /// brings it back on the same port with the same data.
    pub fn stop(&self) {
        if let Some(mut server) = self.lock().take() {
            let _ = writeln!(server.stdin, "stop");
            let _ = server.child.wait();
        }
    }

    /// Starts the stopped server again, same data directory and port.
    ///
    /// # Panics
    ///
    /// When it does not come up (with its log).
    pub fn start_again(&self) {
        if self.lock().is_some() {
            return;
        }
        // After a kill -9 the old backends take a moment to exit and free shared memory.
        let deadline = Instant::now() + READY_TIMEOUT;
        while let Err(e) = self.spawn_and_wait() {
            if Instant::now() > deadline {
                panic!("{e}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the postmaster with SIGKILL (as a crash would); [`TempPostgres::start_again`]
    /// recovers it once its backends have exited.
    pub fn kill9(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned));
        if let Some(pid) = pid {
            run(Command::new("kill").args(["-KILL", &pid]));
        }
        self.stop();
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log"))
            .unwrap_or_else(|e| format!("(no postgres log: {e})"))
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `$MACHINE_ID_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin` with `initdb`.
fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MACHINE_ID_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("initdb").is_file().then_some(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

/// Runs `command`, panicking with its output if it fails.
fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A test CA and a server certificate for `localhost` signed by it, with `openssl`.
fn make_certs(root: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    std::fs::write(
        root.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap_or_else(|e| panic!("write server.ext: {e}"));
    let openssl = || {
        let mut c = Command::new("openssl");
        c.current_dir(root);
        c
    };
    run(openssl()
        .args(["req", "-x509"])
        .args(ec)
        .args(["-keyout", "ca.key", "-out", "ca.crt", "-days", "3"])
        .args(["-subj", "/CN=machine-id test database CA"]));
    run(openssl()
        .arg("req")
        .args(ec)
        .args(["-keyout", "server.key", "-out", "server.csr"])
        .args(["-subj", "/CN=localhost"]));
    run(openssl()
        .args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
        ])
        .args(["-CAcreateserial", "-out", "server.crt", "-days", "3"])
        .args(["-extfile", "server.ext"]));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap_or_else(|e| panic!("chmod server.key: {e}"));
    }
}
