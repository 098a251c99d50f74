//! The directory destination: atomic set writes, 0600 files, symlink policy.

use std::fmt;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::{ArtifactName, Artifacts, Destination, DestinationError};

/// How a [`DirectoryDestination`] treats symlinks in the destination path.
///
/// Serialized in lower case as in tbot's config: `secure`, `try-secure`, `insecure`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SymlinkPolicy {
    /// Refuse any symlink anywhere in the destination path and in place of any file of the
    /// set: the directory is opened with `openat2(2)` and `RESOLVE_NO_SYMLINKS`, and every file
    /// is then created, renamed and read relative to that directory handle. Fails on kernels
    /// without `openat2` (Linux < 5.6).
    Secure,
    /// `secure` where the kernel has `openat2`; elsewhere fall back to `insecure` with one
    /// warning per process. The default.
    #[default]
    TrySecure,
    /// Follow symlinks in the destination path (and in place of files when reading).
    Insecure,
}

impl SymlinkPolicy {
    /// The config spelling: `secure`, `try-secure` or `insecure`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SymlinkPolicy::Secure => "secure",
            SymlinkPolicy::TrySecure => "try-secure",
            SymlinkPolicy::Insecure => "insecure",
        }
    }
}

impl fmt::Display for SymlinkPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SymlinkPolicy {
    type Err = DestinationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "secure" => Ok(SymlinkPolicy::Secure),
            "try-secure" => Ok(SymlinkPolicy::TrySecure),
            "insecure" => Ok(SymlinkPolicy::Insecure),
            other => Err(DestinationError::InvalidInput {
                what: "symlink policy",
                reason: format!("`{other}` (expected secure, try-secure or insecure)"),
            }),
        }
    }
}

/// The name of the generation marker a [`DirectoryDestination`] keeps next to the set.
pub const GENERATION_FILE: &str = ".tbot-generation";
/// The prefix of staging files; leftovers are removed by the next write.
pub(crate) const TEMP_PREFIX: &str = ".tbot-tmp-";
/// The largest file [`DirectoryDestination::read`] accepts.
const READ_LIMIT: u64 = 1 << 20;
/// How long [`DirectoryDestination::read`] retries while a writer keeps changing the set.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Set once the kernel answered `ENOSYS` to `openat2`.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);
/// Set once the `try-secure` fallback warning was logged.
static FALLBACK_WARNED: AtomicBool = AtomicBool::new(false);

/// What to do when `openat2` fails with `errno` under `policy`.
#[derive(Debug, PartialEq, Eq)]
enum Openat2Failure {
    /// Open without `openat2`; log the fallback warning if `true`.
    FallBack { warn: bool },
    /// Refuse: the kernel cannot do what `secure` needs.
    Unsupported,
    /// A real error to report.
    Error,
}

fn on_openat2_error(policy: SymlinkPolicy, errno: Errno, already_warned: bool) -> Openat2Failure {
    match (errno, policy) {
        (Errno::NOSYS, SymlinkPolicy::TrySecure) => Openat2Failure::FallBack {
            warn: !already_warned,
        },
        (Errno::NOSYS, SymlinkPolicy::Secure) => Openat2Failure::Unsupported,
        _ => Openat2Failure::Error,
    }
}

/// An opened destination directory: every file operation goes through `fd`.
pub(crate) struct OpenDir {
    pub(crate) fd: OwnedFd,
    pub(crate) path: PathBuf,
    /// Whether files are opened with `RESOLVE_NO_SYMLINKS`.
    secure: bool,
    policy: SymlinkPolicy,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

fn open_dir_secure(path: &Path, create: bool) -> Result<OwnedFd, Errno> {
    match rustix::fs::openat2(
        rustix::fs::CWD,
        path,
        DIR_FLAGS,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    ) {
        Err(Errno::NOENT) if create => {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(Errno::NOENT);
            };
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            let parent_fd = open_dir_secure(parent, true)?;
            match rustix::fs::mkdirat(&parent_fd, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
            rustix::fs::openat2(
                &parent_fd,
                name,
                DIR_FLAGS,
                Mode::empty(),
                ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH,
            )
        }
        other => other,
    }
}

fn open_dir_plain(path: &Path, create: bool) -> Result<OwnedFd, DestinationError> {
    if create {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| DestinationError::from_io("creating", path, e))?;
    }
    rustix::fs::open(path, DIR_FLAGS, Mode::empty())
        .map_err(|e| DestinationError::from_errno("opening", path, e))
}

/// The first component of `path` that is a symlink, for error messages.
fn find_symlink(path: &Path) -> Option<PathBuf> {
    let mut prefix = PathBuf::new();
    for component in path.components() {
        prefix.push(component);
        if std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.file_type().is_symlink()) {
            return Some(prefix);
        }
    }
    None
}

impl OpenDir {
    /// Opens (and with `create`, creates 0700) the directory under `policy`; `Ok(None)` when
    /// it does not exist and `create` is false.
    pub(crate) fn open(
        path: &Path,
        policy: SymlinkPolicy,
        create: bool,
    ) -> Result<Option<Self>, DestinationError> {
        let want_secure = policy != SymlinkPolicy::Insecure;
        if want_secure && !OPENAT2_MISSING.load(Ordering::Relaxed) {
            match open_dir_secure(path, create) {
                Ok(fd) => {
                    return Ok(Some(Self {
                        fd,
                        path: path.to_path_buf(),
                        secure: true,
                        policy,
                    }));
                }
                Err(Errno::NOENT) if !create => return Ok(None),
                Err(Errno::LOOP) => {
                    return Err(DestinationError::SymlinkRefused {
                        path: path.to_path_buf(),
                        symlink: find_symlink(path).unwrap_or_else(|| path.to_path_buf()),
                        policy,
                    });
                }
                Err(Errno::NOSYS) => OPENAT2_MISSING.store(true, Ordering::Relaxed),
                Err(e) => return Err(DestinationError::from_errno("opening", path, e)),
            }
        }
        if want_secure {
            let warned = FALLBACK_WARNED.load(Ordering::Relaxed);
            match on_openat2_error(policy, Errno::NOSYS, warned) {
                Openat2Failure::FallBack { warn } => {
                    if warn && !FALLBACK_WARNED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            path = %path.display(),
                            "this kernel lacks openat2 (linux 5.6+), so symlink policy try-secure \
                             falls back to following symlinks in destination paths"
                        );
                    }
                }
                Openat2Failure::Unsupported | Openat2Failure::Error => {
                    return Err(DestinationError::SecureUnsupported {
                        path: path.to_path_buf(),
                    });
                }
            }
        }
        match open_dir_plain(path, create) {
            Ok(fd) => Ok(Some(Self {
                fd,
                path: path.to_path_buf(),
                secure: false,
                policy,
            })),
            Err(DestinationError::Io { source, .. })
                if !create && source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn file_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Opens `name` in the directory for reading; `Ok(None)` if it does not exist.
    pub(crate) fn open_file(&self, name: &str) -> Result<Option<File>, DestinationError> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let result = if self.secure {
            rustix::fs::openat2(
                &self.fd,
                name,
                flags,
                Mode::empty(),
                ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH,
            )
        } else {
            rustix::fs::openat(&self.fd, name, flags, Mode::empty())
        };
        match result {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::LOOP) if self.secure => Err(DestinationError::SymlinkRefused {
                path: self.file_path(name),
                symlink: self.file_path(name),
                policy: self.policy,
            }),
            Err(e) => Err(DestinationError::from_errno(
                "opening",
                &self.file_path(name),
                e,
            )),
        }
    }

    fn read_file(&self, name: &str) -> Result<Option<Vec<u8>>, DestinationError> {
        let Some(file) = self.open_file(name)? else {
            return Ok(None);
        };
        let path = || self.file_path(name);
        let meta = rustix::fs::fstat(&file)
            .map_err(|e| DestinationError::from_errno("reading", &path(), e))?;
        if FileType::from_raw_mode(meta.st_mode) != FileType::RegularFile {
            return Err(DestinationError::NotAFile { path: path() });
        }
        let mut buf = Vec::new();
        file.take(READ_LIMIT + 1)
            .read_to_end(&mut buf)
            .map_err(|e| DestinationError::from_io("reading", &path(), e))?;
        if buf.len() as u64 > READ_LIMIT {
            return Err(DestinationError::TooLarge {
                path: path(),
                limit: READ_LIMIT,
            });
        }
        Ok(Some(buf))
    }

    /// The generation in the marker: `None` without a marker; an unreadable marker counts
    /// as an interrupted write (an odd number).
    fn generation(&self) -> Result<Option<u64>, DestinationError> {
        Ok(self
            .read_file(GENERATION_FILE)?
            .map(|bytes| Marker::parse(&bytes).generation))
    }

    /// The marker: `None` without one.
    fn marker(&self) -> Result<Option<Marker>, DestinationError> {
        Ok(self
            .read_file(GENERATION_FILE)?
            .map(|bytes| Marker::parse(&bytes)))
    }

    /// Finishes the rename phase of the write that `marker` says was interrupted: renames
    /// each of its staging files that is still there over its target (the ones already
    /// renamed are gone), then the "complete" marker. Call with the exclusive lock held.
    /// Every staging file was written and fsynced before the odd marker was renamed into
    /// place, so this always completes that write's set.
    fn roll_forward(&self, generation: u64, nonce: &str) -> Result<(), DestinationError> {
        let fd = self.fd.as_fd();
        let mut finished = 0usize;
        for name in ArtifactName::ALL.map(ArtifactName::file_name) {
            let temp = staging_name(nonce, name);
            match rustix::fs::renameat(fd, temp.as_str(), fd, name) {
                Ok(()) => finished += 1,
                Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(DestinationError::from_errno(
                        "renaming into",
                        &self.file_path(name),
                        e,
                    ));
                }
            }
        }
        self.fsync()?;
        let temp = staging_name(nonce, GENERATION_FILE);
        match rustix::fs::renameat(fd, temp.as_str(), fd, GENERATION_FILE) {
            Ok(()) => {}
            // Not staged (a marker from another writer): write the next even number.
            Err(Errno::NOENT) => {
                let mut staging = Staging::new(self);
                let mode = if self.has_default_acl() { 0o640 } else { 0o600 };
                let done = generation.saturating_add(1);
                staging.stage(GENERATION_FILE, format!("{done}\n").as_bytes(), mode)?;
                staging.commit(GENERATION_FILE)?;
            }
            Err(e) => {
                return Err(DestinationError::from_errno(
                    "renaming into",
                    &self.file_path(GENERATION_FILE),
                    e,
                ));
            }
        }
        self.fsync()?;
        tracing::info!(
            path = %self.path.display(),
            generation,
            renamed = finished,
            "finished the renames of a write that was interrupted"
        );
        Ok(())
    }

    /// With the exclusive lock held: rolls an interrupted write forward if the marker says
    /// there is one and names its staging files. `Ok(true)` when something was finished.
    fn recover_locked(&self) -> Result<bool, DestinationError> {
        match self.marker()? {
            Some(Marker {
                generation,
                nonce: Some(nonce),
            }) if generation % 2 == 1 => {
                self.roll_forward(generation, &nonce)?;
                Ok(true)
            }
            Some(Marker { generation, .. }) if generation % 2 == 1 => {
                tracing::warn!(
                    path = %self.path.display(),
                    "the destination holds an interrupted write that names no staging files \
                     (written by an older tbot); the next write replaces the whole set"
                );
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    fn lock(&self, op: FlockOperation) -> Result<bool, DestinationError> {
        loop {
            match rustix::fs::flock(&self.fd, op) {
                Ok(()) => return Ok(true),
                Err(Errno::INTR) => continue,
                Err(Errno::WOULDBLOCK) => return Ok(false),
                Err(e) => return Err(DestinationError::from_errno("locking", &self.path, e)),
            }
        }
    }

    fn fsync(&self) -> Result<(), DestinationError> {
        rustix::fs::fsync(&self.fd)
            .map_err(|e| DestinationError::from_errno("syncing", &self.path, e))
    }

    /// Whether the directory carries a default ACL (set up by `init_acls`).
    pub(crate) fn has_default_acl(&self) -> bool {
        rustix::fs::fgetxattr_query(&self.fd, "system.posix_acl_default").is_ok_and(|n| n > 4)
    }

    fn has_access_acl(&self) -> bool {
        rustix::fs::fgetxattr_query(&self.fd, "system.posix_acl_access").is_ok_and(|n| n > 4)
    }

    /// Removes staging files a crashed write left behind. Call with the write lock held.
    pub(crate) fn remove_temps(&self) -> Result<(), DestinationError> {
        let mut dir = rustix::fs::Dir::read_from(&self.fd)
            .map_err(|e| DestinationError::from_errno("listing", &self.path, e))?;
        let mut stale = Vec::new();
        while let Some(entry) = dir.read() {
            let entry =
                entry.map_err(|e| DestinationError::from_errno("listing", &self.path, e))?;
            let name = entry.file_name().to_bytes();
            if name.starts_with(TEMP_PREFIX.as_bytes()) {
                stale.push(entry.file_name().to_owned());
            }
        }
        for name in stale {
            match rustix::fs::unlinkat(&self.fd, &name, AtFlags::empty()) {
                Ok(()) => {
                    tracing::info!(path = %self.path.display(), file = ?name, "removed a staging file left by an interrupted write")
                }
                Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(DestinationError::from_errno(
                        "removing stale staging file in",
                        &self.path,
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Fails unless `name` is absent, a regular file or a symlink (which a rename replaces
    /// without following it).
    fn check_replaceable(&self, name: &str) -> Result<(), DestinationError> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile | FileType::Symlink => Ok(()),
                _ => Err(DestinationError::NotAFile {
                    path: self.file_path(name),
                }),
            },
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(DestinationError::from_errno(
                "inspecting",
                &self.file_path(name),
                e,
            )),
        }
    }
}

/// The generation marker's contents: the generation, and for an odd ("write in progress")
/// marker the nonce naming that write's staging files (`.tbot-tmp-<nonce>-<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Marker {
    generation: u64,
    nonce: Option<String>,
}

impl Marker {
    /// Parses `"<generation>\n[<nonce>\n]"`. An unreadable marker counts as an interrupted
    /// write (generation 1) without a nonce, so it is reported, never rolled forward.
    fn parse(bytes: &[u8]) -> Self {
        let text = std::str::from_utf8(bytes).unwrap_or("");
        let mut lines = text.lines();
        let Some(generation) = lines.next().and_then(|l| l.trim().parse::<u64>().ok()) else {
            return Self {
                generation: 1,
                nonce: None,
            };
        };
        let nonce = lines
            .next()
            .map(str::trim)
            .filter(|n| is_nonce(n))
            .map(str::to_owned);
        Self { generation, nonce }
    }
}

/// Whether `s` can be a staging nonce (so it cannot smuggle a path into a file name).
fn is_nonce(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
}

/// The staging file of `target` for the write `nonce`.
fn staging_name(nonce: &str, target: &str) -> String {
    format!("{TEMP_PREFIX}{nonce}-{target}")
}

/// Staging files of one write; any not yet renamed are removed on drop.
struct Staging<'a> {
    dir: &'a OpenDir,
    temps: Vec<(String, &'static str)>,
    nonce: String,
}

impl<'a> Staging<'a> {
    fn new(dir: &'a OpenDir) -> Self {
        let mut bytes = [0u8; 8];
        let nonce = match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())
        {
            Ok(_) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
            Err(_) => format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
        };
        Self {
            dir,
            temps: Vec::new(),
            nonce,
        }
    }

    /// Writes `bytes` to a fresh staging file for `target`, created with `mode` (never
    /// chmod-ed later), and fsyncs it.
    fn stage(
        &mut self,
        target: &'static str,
        bytes: &[u8],
        mode: u32,
    ) -> Result<(), DestinationError> {
        let temp = staging_name(&self.nonce, target);
        let target_path = self.dir.file_path(target);
        let fd = rustix::fs::openat(
            &self.dir.fd,
            temp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| DestinationError::from_errno("creating", &target_path, e))?;
        self.temps.push((temp, target));
        let mut file = File::from(fd);
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| DestinationError::from_io("writing", &target_path, e))
    }

    /// Renames the staging file for `target` over `target`.
    fn commit(&mut self, target: &str) -> Result<(), DestinationError> {
        let Some(i) = self.temps.iter().position(|(_, t)| *t == target) else {
            return Ok(());
        };
        let (temp, _) = self.temps.remove(i);
        let fd = self.dir.fd.as_fd();
        rustix::fs::renameat(fd, temp.as_str(), fd, target).map_err(|e| {
            // Put it back so drop removes it.
            self.temps.push((temp, "renamed"));
            DestinationError::from_errno("renaming into", &self.dir.file_path(target), e)
        })
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        for (temp, _) in self.temps.drain(..) {
            if let Err(e) = rustix::fs::unlinkat(&self.dir.fd, temp.as_str(), AtFlags::empty()) {
                tracing::warn!(path = %self.dir.path.display(), file = %temp, error = %e, "could not remove a staging file; the next write will");
            }
        }
    }
}

/// A destination directory on the local filesystem, in the layout tools read: eight plain
/// files named as in [`ArtifactName`].
///
/// # What a write guarantees
///
/// [`write`](Destination::write) takes an exclusive `flock` on the directory (writers are
/// serialized), finishes a write a killed writer left half-done (see below), then:
///
/// 1. writes every file of the new set to a staging file in the same directory
///    (`.tbot-tmp-<nonce>-<name>`, created `O_EXCL` with mode 0600 — 0640 when the
///    directory has a default ACL from [`init_acls`](crate::init_acls), so the ACL's mask lets
///    the reader entry through — never chmod-ed afterwards) and fsyncs it, plus two staging
///    copies of the generation marker [`GENERATION_FILE`];
/// 2. checks that no name of the set is taken by a directory or other non-file;
/// 3. renames the "write in progress" marker (an odd generation, followed by a line with the
///    write's `<nonce>`) into place and fsyncs the directory; renames the eight files into
///    place, CA files and templates first, then `key`, `key.pub`, `sshcert`, `tlscert` back
///    to back; fsyncs the directory; renames the "complete" marker (the next even
///    generation) into place and fsyncs the directory.
///
/// Any failure in steps 1–2 (disk full, quota, read-only filesystem, permission, a directory
/// in the way) removes the staging files and leaves the previous set exactly as it was:
/// nothing of the old set has been touched yet. Renames within one directory over existing
/// names need no space, so step 3 fails only on an I/O error or a concurrent tamperer.
///
/// # A writer killed during the renames
///
/// Once the odd marker is in place every staging file of the write is complete and fsynced,
/// and the marker names them. So a write interrupted in step 3 (`kill -9`, a crash) can
/// always be finished: [`recover`](DirectoryDestination::recover), and every later
/// [`write`](Destination::write) before it stages anything, renames the staging files that are
/// still there over their targets (those already renamed are gone) and then the "complete"
/// marker. `tbot` calls `recover` at start, before contacting the auth server. A marker
/// written by an older tbot names no staging files; such a set is only replaced whole by the
/// next write.
///
/// # What a reader sees
///
/// [`read`](Destination::read) is a seqlock reader: it reads the marker, the eight files, and
/// the marker again, and returns only if the marker was even and unchanged, i.e. no rename
/// happened in between — so `read` never returns a key with another key's certificate. It
/// retries while a writer is active (up to 10 seconds). When the marker is odd and no writer
/// holds the lock (a writer died during step 3), it returns, under a shared lock and without
/// writing anything, the set the roll-forward will leave: each file's staging copy where one
/// is still there, else the file in place. Only an odd marker that names no staging files is
/// reported as [`InterruptedWrite`](DestinationError::InterruptedWrite).
///
/// Programs that open the plain files by path without this protocol (OpenSSH, TLS clients)
/// cannot be given set atomicity by any scheme that keeps plain files under fixed names: each
/// `open` is a separate lookup. They see every file whole (each rename is atomic), and can
/// see a key/certificate mix only (a) if they open `key` and `sshcert`/`tlscert` in the
/// microseconds between those adjacent renames, or (b) after a writer was killed inside
/// that window, until the next `recover` or write (the next `tbot` start) finishes the set.
/// The marker lets a careful reader detect both.
///
/// All operations are blocking (see [`Destination`]).
#[derive(Debug)]
pub struct DirectoryDestination {
    path: PathBuf,
    symlinks: SymlinkPolicy,
    warned_mode: AtomicBool,
}

impl DirectoryDestination {
    /// A destination at `path` with the default symlink policy (`try-secure`). Nothing is
    /// touched until the first write or read.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            symlinks: SymlinkPolicy::default(),
            warned_mode: AtomicBool::new(false),
        }
    }

    /// The same destination with another symlink policy.
    #[must_use]
    pub fn with_symlinks(mut self, symlinks: SymlinkPolicy) -> Self {
        self.symlinks = symlinks;
        self
    }

    /// The destination directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The symlink policy in force.
    pub fn symlinks(&self) -> SymlinkPolicy {
        self.symlinks
    }

    /// Finishes a write that a killed writer left half-renamed, so the plain files are one
    /// set again; `Ok(true)` when something was finished, `Ok(false)` when there was nothing
    /// to do (or the destination does not exist yet). Waits for an active writer.
    ///
    /// `tbot` calls this for every directory destination at start, before it contacts the
    /// auth server, so the set is whole even while the server cannot be reached. A marker
    /// written by an older tbot names no staging files; it is left for the next write.
    pub fn recover(&self) -> Result<bool, DestinationError> {
        let Some(dir) = OpenDir::open(&self.path, self.symlinks, false)? else {
            return Ok(false);
        };
        dir.lock(FlockOperation::LockExclusive)?;
        let result = dir.recover_locked();
        let _ = dir.lock(FlockOperation::Unlock);
        result
    }

    fn warn_if_loose(&self, dir: &OpenDir) {
        let Ok(st) = rustix::fs::fstat(&dir.fd) else {
            return;
        };
        let mode = st.st_mode & 0o777;
        if mode & 0o077 != 0
            && !dir.has_access_acl()
            && !self.warned_mode.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                path = %self.path.display(),
                mode = format_args!("{mode:04o}"),
                "destination directory is accessible to other users; consider `chmod 0700` \
                 or `tbot init` to grant a reader user access with ACLs"
            );
        }
    }

    fn write_locked(&self, dir: &OpenDir, artifacts: &Artifacts) -> Result<u64, DestinationError> {
        // A writer that died mid-rename left a mixed set: finish it first, so a failure of
        // this write (disk full) still leaves a whole set behind.
        dir.recover_locked()?;
        dir.remove_temps()?;
        let mode = if dir.has_default_acl() { 0o640 } else { 0o600 };
        let mut staging = Staging::new(dir);
        for (name, bytes) in artifacts.iter() {
            staging.stage(name.file_name(), bytes, mode)?;
        }
        let in_progress = match dir.generation()? {
            None => 1,
            Some(g) if g % 2 == 1 => g.saturating_add(2),
            Some(g) => g.saturating_add(1),
        };
        let done = in_progress.saturating_add(1);
        const IN_PROGRESS: &str = ".tbot-generation.in-progress";
        // The odd marker names this write's staging files, so a writer that dies during the
        // renames can be rolled forward by the next one (see `recover`).
        let in_progress_marker = format!("{in_progress}\n{}\n", staging.nonce);
        staging.stage(IN_PROGRESS, in_progress_marker.as_bytes(), mode)?;
        staging.stage(GENERATION_FILE, format!("{done}\n").as_bytes(), mode)?;
        for name in ArtifactName::ALL {
            dir.check_replaceable(name.file_name())?;
        }
        dir.check_replaceable(GENERATION_FILE)?;

        // Rename phase: from here on, old files are replaced.
        let fd = dir.fd.as_fd();
        let in_progress_temp = staging
            .temps
            .iter()
            .position(|(_, t)| *t == IN_PROGRESS)
            .map(|i| staging.temps.remove(i).0);
        if let Some(temp) = in_progress_temp {
            rustix::fs::renameat(fd, temp.as_str(), fd, GENERATION_FILE).map_err(|e| {
                staging.temps.push((temp, IN_PROGRESS));
                DestinationError::from_errno("renaming into", &dir.file_path(GENERATION_FILE), e)
            })?;
        }
        dir.fsync()?;
        for name in ArtifactName::ALL {
            staging.commit(name.file_name())?;
        }
        dir.fsync()?;
        staging.commit(GENERATION_FILE)?;
        dir.fsync()?;
        Ok(done)
    }
}

impl Destination for DirectoryDestination {
    fn write(&self, artifacts: &Artifacts) -> Result<(), DestinationError> {
        let Some(dir) = OpenDir::open(&self.path, self.symlinks, true)? else {
            return Err(DestinationError::NotADirectory {
                path: self.path.clone(),
            });
        };
        self.warn_if_loose(&dir);
        dir.lock(FlockOperation::LockExclusive)?;
        let result = self.write_locked(&dir, artifacts);
        // Closing the fd releases the lock; unlock explicitly for clarity.
        let _ = dir.lock(FlockOperation::Unlock);
        match result {
            Ok(generation) => {
                tracing::debug!(path = %self.path.display(), generation, "wrote destination");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "destination write failed");
                Err(e)
            }
        }
    }

    fn recover(&self) -> Result<bool, DestinationError> {
        DirectoryDestination::recover(self)
    }

    fn read(&self) -> Result<Option<Artifacts>, DestinationError> {
        let Some(dir) = OpenDir::open(&self.path, self.symlinks, false)? else {
            return Ok(None);
        };
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut attempt: u32 = 0;
        loop {
            let before = dir.generation()?;
            if before.is_some_and(|g| g % 2 == 1) {
                // A write is in progress, or one died mid-way. Holding the shared lock means
                // no writer is active; if the marker is still odd then, the write was
                // interrupted: read the set its roll-forward would leave.
                if dir.lock(FlockOperation::NonBlockingLockShared)? {
                    let result = read_interrupted(&dir);
                    let _ = dir.lock(FlockOperation::Unlock);
                    match result? {
                        Interrupted::Healed => {}
                        Interrupted::Whole(files) => return assemble(&self.path, files),
                        Interrupted::Unrecoverable => {
                            return Err(DestinationError::InterruptedWrite {
                                path: self.path.clone(),
                            });
                        }
                    }
                }
            } else {
                let mut files = Vec::with_capacity(ArtifactName::ALL.len());
                for name in ArtifactName::ALL {
                    files.push((name, dir.read_file(name.file_name())?));
                }
                if dir.generation()? == before {
                    return assemble(&self.path, files);
                }
            }
            if Instant::now() > deadline {
                return Err(DestinationError::Busy {
                    path: self.path.clone(),
                });
            }
            attempt = attempt.saturating_add(1);
            std::thread::sleep(Duration::from_micros(20u64 << attempt.min(10)));
        }
    }
}

/// What [`read`](Destination::read) makes of an odd marker while it holds the shared lock.
enum Interrupted {
    /// The marker is even again (a writer finished between the two looks): read normally.
    Healed,
    /// The set the roll-forward would leave: each file's staging copy where it is still
    /// there, else the file in place.
    Whole(Vec<(ArtifactName, Option<Vec<u8>>)>),
    /// An odd marker that names no staging files: the files may not belong together.
    Unrecoverable,
}

/// Reads the set an interrupted write will have once rolled forward, without writing
/// anything (a reader may have read access only). Call with the shared lock held, so no
/// writer renames anything meanwhile.
fn read_interrupted(dir: &OpenDir) -> Result<Interrupted, DestinationError> {
    let marker = match dir.marker()? {
        Some(m) if m.generation % 2 == 1 => m,
        _ => return Ok(Interrupted::Healed),
    };
    let Some(nonce) = marker.nonce else {
        return Ok(Interrupted::Unrecoverable);
    };
    let mut files = Vec::with_capacity(ArtifactName::ALL.len());
    for name in ArtifactName::ALL {
        let bytes = match dir.read_file(&staging_name(&nonce, name.file_name()))? {
            Some(staged) => Some(staged),
            None => dir.read_file(name.file_name())?,
        };
        files.push((name, bytes));
    }
    Ok(Interrupted::Whole(files))
}

fn assemble(
    path: &Path,
    files: Vec<(ArtifactName, Option<Vec<u8>>)>,
) -> Result<Option<Artifacts>, DestinationError> {
    let missing: Vec<String> = files
        .iter()
        .filter(|(_, b)| b.is_none())
        .map(|(n, _)| n.file_name().to_owned())
        .collect();
    if missing.len() == files.len() {
        return Ok(None);
    }
    if !missing.is_empty() {
        return Err(DestinationError::Incomplete {
            path: path.to_path_buf(),
            missing,
        });
    }
    let mut out = Artifacts::default();
    for (name, bytes) in files {
        *out.get_mut(name) = bytes.unwrap_or_default();
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_spellings() {
        for (p, s) in [
            (SymlinkPolicy::Secure, "secure"),
            (SymlinkPolicy::TrySecure, "try-secure"),
            (SymlinkPolicy::Insecure, "insecure"),
        ] {
            assert_eq!(p.to_string(), s);
            assert_eq!(s.parse::<SymlinkPolicy>().ok(), Some(p));
            assert_eq!(serde_json::to_string(&p).ok(), Some(format!("\"{s}\"")));
            assert_eq!(
                serde_json::from_str::<SymlinkPolicy>(&format!("\"{s}\"")).ok(),
                Some(p)
            );
        }
        assert_eq!(SymlinkPolicy::default(), SymlinkPolicy::TrySecure);
        assert!("try_secure".parse::<SymlinkPolicy>().is_err());
        assert!(serde_json::from_str::<SymlinkPolicy>("\"trysecure\"").is_err());
    }

    #[test]
    fn openat2_missing_falls_back_once_only_for_try_secure() {
        assert_eq!(
            on_openat2_error(SymlinkPolicy::TrySecure, Errno::NOSYS, false),
            Openat2Failure::FallBack { warn: true }
        );
        assert_eq!(
            on_openat2_error(SymlinkPolicy::TrySecure, Errno::NOSYS, true),
            Openat2Failure::FallBack { warn: false }
        );
        assert_eq!(
            on_openat2_error(SymlinkPolicy::Secure, Errno::NOSYS, false),
            Openat2Failure::Unsupported
        );
        assert_eq!(
            on_openat2_error(SymlinkPolicy::TrySecure, Errno::LOOP, false),
            Openat2Failure::Error
        );
    }

    #[test]
    fn assemble_distinguishes_empty_partial_and_whole() {
        let p = Path::new("/d");
        let none: Vec<_> = ArtifactName::ALL.into_iter().map(|n| (n, None)).collect();
        assert!(matches!(assemble(p, none), Ok(None)));
        let mut some: Vec<_> = ArtifactName::ALL
            .into_iter()
            .map(|n| (n, Some(n.file_name().as_bytes().to_vec())))
            .collect();
        let whole = assemble(p, some.clone()).ok().flatten();
        assert_eq!(whole.map(|a| a.key), Some(b"key".to_vec()));
        some[6].1 = None;
        let e = assemble(p, some).expect_err("partial");
        assert_eq!(
            e.to_string(),
            "destination /d is incomplete (missing sshcert); run tbot again to rewrite it"
        );
    }
}
