//! Where the bot keeps its own renewable identity: a data directory or memory.
//!
//! # The data directory
//!
//! ```text
//! DATA/                    0700, held with an exclusive flock on DATA/lock
//!   lock                   the flock; two tbots never share one directory
//!   current -> id-7        the identity in force: a symlink to one unit directory
//!   id-7/                  0700, one saved identity, never modified once `current` names it:
//!     key key.pub sshcert tlscert tlscacerts sshcacerts tokenhash     (each 0600)
//!   pending                0600, only while a renewal is under way: the key the renewal
//!                          certifies and the SHA-256 of the tlscert it renews
//! ```
//!
//! `tokenhash` is the SHA-256 of the token that joined, so a changed token means a fresh join.
//!
//! **The identity is replaced as one unit.** A save writes every file into a new directory
//! `id-<n+1>` (each file fsynced, then the directory, then `DATA`), makes a temporary symlink
//! to it and renames that over `current` (one atomic rename), fsyncs `DATA`, and only then
//! removes the old unit. A `kill -9` (or power loss) at any instant therefore leaves
//! `current` naming either the old or the new unit, each whole; a half-written `id-<n+1>`
//! that `current` never named is removed by the next open or save. [`Storage::load`] reads
//! only through `current` and never returns files of two units.
//!
//! **The pending renewal key** makes a renewal retryable byte for byte: before the bot sends
//! a renewal it durably writes the new key with the SHA-256 of the stored certificate it
//! renews ([`Storage::save_pending_key`]); every retry (after a lost answer or a crash) finds
//! it and presents the same certificate with the same key, which the auth server answers
//! idempotently. A save of the new identity removes it; a pending key bound to another
//! certificate is ignored and removed. An idle data directory holds no pending key, so a
//! copy of it replayed by a thief presents a new key and is still caught.
//!
//! **The old flat layout** (the seven files directly in `DATA`, written file by file by
//! earlier versions) is still read when there is no `current`; the next save writes a unit
//! and removes the flat files.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::fs::FlockOperation;

use crate::{BotError, Result};

/// The files of a stored identity.
pub mod files {
    use machine_id_destination::ArtifactName;

    /// Private key, PEM.
    pub const KEY: &str = ArtifactName::Key.file_name();
    /// Public key, OpenSSH line.
    pub const KEY_PUB: &str = ArtifactName::KeyPub.file_name();
    /// SSH certificate line.
    pub const SSH_CERT: &str = ArtifactName::SshCert.file_name();
    /// X.509 certificate, PEM.
    pub const TLS_CERT: &str = ArtifactName::TlsCert.file_name();
    /// The cluster's TLS CA certificates, PEM.
    pub const TLS_CA_CERTS: &str = ArtifactName::TlsCaCerts.file_name();
    /// The cluster's SSH CA keys, one line each.
    pub const SSH_CA_CERTS: &str = ArtifactName::SshCaCerts.file_name();
    /// SHA-256 (hex) of the token that joined.
    pub const TOKEN_HASH: &str = "tokenhash";
    /// Held with an exclusive `flock` while a tbot uses the directory.
    pub const LOCK: &str = "lock";
    /// The symlink naming the unit directory of the identity in force.
    pub const CURRENT: &str = "current";
    /// The prefix of unit directories (`id-<n>`).
    pub const UNIT_PREFIX: &str = "id-";
    /// The pending renewal key.
    pub const PENDING: &str = "pending";
    /// The files of one identity, in the order a save writes them.
    pub const IDENTITY: [&str; 7] = [
        TOKEN_HASH,
        TLS_CA_CERTS,
        SSH_CA_CERTS,
        SSH_CERT,
        TLS_CERT,
        KEY_PUB,
        KEY,
    ];
}

/// The largest file of the data directory [`Storage::load`] reads.
const FILE_LIMIT: u64 = 1 << 20;

/// The bot's own identity as stored: text files, all public material except `key`.
/// `Debug` shows no contents.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoredIdentity {
    /// `key`.
    pub key_pem: String,
    /// `key.pub`.
    pub key_pub: String,
    /// `sshcert`.
    pub ssh_cert: String,
    /// `tlscert`.
    pub tls_cert_pem: String,
    /// `tlscacerts`.
    pub tls_ca_pem: String,
    /// `sshcacerts`.
    pub ssh_ca: String,
    /// `tokenhash` (may be empty when the identity was not joined with a token).
    pub token_hash: String,
}

impl std::fmt::Debug for StoredIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredIdentity").finish_non_exhaustive()
    }
}

/// Where the identity is kept.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A locked data directory.
    Directory(Arc<DataDir>),
    /// Memory (lost when the process exits).
    Memory(Arc<MemoryStorage>),
}

/// Memory storage: the same semantics as a data directory (one identity replaced whole, a
/// pending key bound to its certificate), lost when the process exits.
#[derive(Default)]
pub struct MemoryStorage {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    identity: Option<StoredIdentity>,
    /// (SHA-256 of the parent tlscert, key PEM).
    pending: Option<(String, String)>,
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStorage").finish_non_exhaustive()
    }
}

impl MemoryStorage {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Storage {
    /// Memory storage, empty.
    pub fn memory() -> Self {
        Self::Memory(Arc::default())
    }

    /// Opens (creating if needed) and locks the data directory at `path`.
    pub fn directory(path: impl Into<PathBuf>) -> Result<Self> {
        Ok(Self::Directory(Arc::new(DataDir::open(path.into())?)))
    }

    /// Where this is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Directory(d) => format!("data directory {}", d.path.display()),
            Self::Memory(_) => "memory".to_string(),
        }
    }

    /// The data directory, if this is one.
    pub fn data_dir(&self) -> Option<&Path> {
        match self {
            Self::Directory(d) => Some(d.path()),
            Self::Memory(_) => None,
        }
    }

    /// The stored identity, if any. Never a mix of two saves.
    pub fn load(&self) -> Result<Option<StoredIdentity>> {
        match self {
            Self::Directory(d) => d.load(),
            Self::Memory(m) => Ok(m.lock().identity.clone()),
        }
    }

    /// Replaces the stored identity as one unit, then drops the pending key (it was for the
    /// identity just replaced). On error the previous identity is still the stored one.
    pub fn save(&self, id: &StoredIdentity) -> Result<()> {
        match self {
            Self::Directory(d) => d.save(id),
            Self::Memory(m) => {
                let mut st = m.lock();
                st.identity = Some(id.clone());
                st.pending = None;
                Ok(())
            }
        }
    }

    /// The pending renewal key (PEM) if there is one for the certificate whose DER hashes
    /// to `parent_sha256` (hex); a pending key for another certificate is removed.
    pub fn load_pending_key(&self, parent_sha256: &str) -> Result<Option<String>> {
        match self {
            Self::Directory(d) => d.load_pending_key(parent_sha256),
            Self::Memory(m) => {
                let mut st = m.lock();
                match st.pending.take() {
                    Some((parent, key)) if parent == parent_sha256 => {
                        st.pending = Some((parent, key.clone()));
                        Ok(Some(key))
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    /// Durably records `key_pem` as the key the renewal of the certificate hashing to
    /// `parent_sha256` certifies. The renewal must not be sent if this fails.
    pub fn save_pending_key(&self, parent_sha256: &str, key_pem: &str) -> Result<()> {
        match self {
            Self::Directory(d) => d.save_pending_key(parent_sha256, key_pem),
            Self::Memory(m) => {
                m.lock().pending = Some((parent_sha256.to_string(), key_pem.to_string()));
                Ok(())
            }
        }
    }

    /// Removes the pending key, if any (after a fresh join, which needs none).
    pub fn clear_pending_key(&self) -> Result<()> {
        match self {
            Self::Directory(d) => d.clear_pending_key(),
            Self::Memory(m) => {
                m.lock().pending = None;
                Ok(())
            }
        }
    }
}

/// A data directory, locked for this process (the lock is released when dropped).
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

fn io_error(path: &Path, op: &str, e: &std::io::Error) -> BotError {
    let message = match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "permission denied {op}; run tbot as the user that owns it, or choose another --data-dir"
        ),
        std::io::ErrorKind::ReadOnlyFilesystem => {
            format!("read-only filesystem {op}; choose a writable --data-dir")
        }
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            format!(
                "no space left {op}; free space on that filesystem (the previous identity was kept)"
            )
        }
        _ => format!("{op}: {e}"),
    };
    BotError::DataDir {
        path: path.to_path_buf(),
        message,
    }
}

/// The `n` of a unit directory name `id-<n>`.
fn unit_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(files::UNIT_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn fsync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(path, "syncing", &e))
}

impl DataDir {
    /// Creates the directory (0700) if missing, tightens an existing one that others may
    /// read to 0700 (with a warning), takes the exclusive lock and removes what an
    /// interrupted save left (a unit `current` never named, temporary files).
    pub fn open(path: PathBuf) -> Result<Self> {
        if !path.exists() {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| io_error(&path, "creating its parent", &e))?;
            }
            // Created 0700 from the start: no moment where another user could open it.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists if path.is_dir() => Ok(()),
                    _ => Err(e),
                })
                .map_err(|e| io_error(&path, "creating it", &e))?;
        } else if !path.is_dir() {
            return Err(BotError::DataDir {
                path,
                message: "not a directory; choose another --data-dir".into(),
            });
        }
        let meta = std::fs::metadata(&path).map_err(|e| io_error(&path, "reading its mode", &e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(
                |e| match e.kind() {
                    std::io::ErrorKind::ReadOnlyFilesystem => {
                        io_error(&path, "changing its mode to 0700", &e)
                    }
                    _ => BotError::DataDir {
                        path: path.clone(),
                        message: format!(
                            "other users may read it (mode {mode:04o}) and tbot cannot change that ({e}); run `chmod 700` on it as its owner"
                        ),
                    },
                },
            )?;
            tracing::warn!(path = %path.display(), was = %format!("{mode:04o}"), "the data directory was open to other users; changed its mode to 0700");
        }
        let lock_path = path.join(files::LOCK);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, "opening the lock file", &e))?;
        match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(BotError::DataDirLocked { path }),
            Err(e) => {
                return Err(io_error(&lock_path, "locking", &std::io::Error::from(e)));
            }
        }
        tracing::debug!(path = %path.display(), "locked the data directory");
        let dir = Self { path, _lock: lock };
        dir.remove_leftovers();
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The unit directory `current` names: `Ok(None)` when there is no `current` (an empty
    /// or flat-layout directory).
    fn current_unit(&self) -> Result<Option<String>> {
        let link = self.path.join(files::CURRENT);
        match std::fs::read_link(&link) {
            Ok(target) => {
                let name = target.to_str().filter(|n| unit_number(n).is_some());
                match name {
                    Some(n) => Ok(Some(n.to_string())),
                    None => Err(BotError::DataDir {
                        path: link,
                        message: format!(
                            "it names {} instead of a unit directory id-<n> of this data directory; remove the data directory's contents and join again with a new token",
                            target.display()
                        ),
                    }),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&link, "reading", &e)),
        }
    }

    fn read(&self, dir: &Path, name: &str) -> Result<Option<String>> {
        let p = dir.join(name);
        match crate::bounded::read_bounded(&p, FILE_LIMIT) {
            Ok(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| BotError::DataDir {
                    path: p,
                    message: "not UTF-8 text, so not a file tbot wrote; remove it and join again"
                        .into(),
                }),
            Err(crate::bounded::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(crate::bounded::ReadError::Io(e)) => Err(io_error(&p, "reading", &e)),
            Err(crate::bounded::ReadError::TooLarge { size }) => Err(BotError::DataDir {
                path: p,
                message: format!(
                    "{}, more than any file tbot writes ({FILE_LIMIT} bytes); remove it and join again",
                    crate::bounded::size_text(size, FILE_LIMIT)
                ),
            }),
        }
    }

    /// The stored identity: the unit `current` names, else the flat layout of earlier
    /// versions; `None` when there is none or it is incomplete.
    pub fn load(&self) -> Result<Option<StoredIdentity>> {
        let (dir, layout) = match self.current_unit()? {
            Some(unit) => (self.path.join(unit), "unit"),
            None => (self.path.clone(), "flat"),
        };
        let mut parts = Vec::new();
        for name in [
            files::KEY,
            files::KEY_PUB,
            files::SSH_CERT,
            files::TLS_CERT,
            files::TLS_CA_CERTS,
            files::SSH_CA_CERTS,
        ] {
            match self.read(&dir, name)? {
                Some(s) => parts.push(s),
                None => {
                    if !parts.is_empty() || layout == "unit" {
                        tracing::warn!(path = %dir.display(), missing = name, "the stored identity is incomplete; joining again");
                    }
                    return Ok(None);
                }
            }
        }
        let token_hash = self.read(&dir, files::TOKEN_HASH)?.unwrap_or_default();
        tracing::debug!(path = %dir.display(), layout, "read the stored identity");
        let mut it = parts.into_iter();
        let mut next = || it.next().unwrap_or_default();
        Ok(Some(StoredIdentity {
            key_pem: next(),
            key_pub: next(),
            ssh_cert: next(),
            tls_cert_pem: next(),
            tls_ca_pem: next(),
            ssh_ca: next(),
            token_hash: token_hash.trim().to_string(),
        }))
    }

    /// Writes `id` as a new unit directory and switches `current` to it with one rename
    /// (see the module doc), then removes the pending key, the old unit and any flat-layout
    /// files.
    pub fn save(&self, id: &StoredIdentity) -> Result<()> {
        let current = self.current_unit()?;
        let next = self
            .unit_names()?
            .iter()
            .filter_map(|n| unit_number(n))
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        let unit = format!("{}{next}", files::UNIT_PREFIX);
        let unit_path = self.path.join(&unit);
        let written = self.write_unit(&unit_path, id);
        if let Err(e) = written {
            if let Err(rm) = std::fs::remove_dir_all(&unit_path) {
                tracing::debug!(path = %unit_path.display(), error = %rm, "could not remove the unit of a failed save; the next open or save will");
            }
            return Err(e);
        }
        // The switch: one rename of a symlink over `current`.
        let tmp_link = self.path.join(".tmp-current");
        let _ = std::fs::remove_file(&tmp_link);
        let link = self.path.join(files::CURRENT);
        std::os::unix::fs::symlink(&unit, &tmp_link)
            .and_then(|()| std::fs::rename(&tmp_link, &link))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp_link);
                let _ = std::fs::remove_dir_all(&unit_path);
                io_error(&link, "switching to the new identity", &e)
            })?;
        fsync_dir(&self.path)?;
        tracing::debug!(path = %unit_path.display(), "saved the bot identity");
        // Cleanup: what is left is ignored by `load` and removed at the next open.
        if let Err(e) = self.clear_pending_key() {
            tracing::debug!(error = %e, "could not remove the pending renewal key; it is ignored");
        }
        if let Some(old) = current {
            remove_logged(&self.path.join(old), true);
        }
        for name in files::IDENTITY {
            remove_logged(&self.path.join(name), false);
        }
        Ok(())
    }

    /// Writes every file of `id` into the new directory `dir` (0700), fsyncing each file, the
    /// directory and the data directory.
    fn write_unit(&self, dir: &Path, id: &StoredIdentity) -> Result<()> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_error(dir, "creating the new identity's directory", &e))?;
        for (name, body) in [
            (files::TOKEN_HASH, id.token_hash.as_str()),
            (files::TLS_CA_CERTS, id.tls_ca_pem.as_str()),
            (files::SSH_CA_CERTS, id.ssh_ca.as_str()),
            (files::SSH_CERT, id.ssh_cert.as_str()),
            (files::TLS_CERT, id.tls_cert_pem.as_str()),
            (files::KEY_PUB, id.key_pub.as_str()),
            (files::KEY, id.key_pem.as_str()),
        ] {
            let p = dir.join(name);
            let result = (|| {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&p)?;
                f.write_all(body.as_bytes())?;
                f.sync_all()
            })();
            result.map_err(|e| io_error(&p, "writing", &e))?;
        }
        fsync_dir(dir)?;
        fsync_dir(&self.path)
    }

    /// The names of the unit directories present.
    fn unit_names(&self) -> Result<Vec<String>> {
        let entries =
            std::fs::read_dir(&self.path).map_err(|e| io_error(&self.path, "listing", &e))?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| unit_number(n).is_some())
            .collect())
    }

    /// Removes units `current` does not name, temporary files, and the flat-layout files
    /// when a unit is in force. Best effort: what fails is logged and tried again next time.
    fn remove_leftovers(&self) {
        let current = match self.current_unit() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the data directory's current identity");
                return;
            }
        };
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let stale_unit = unit_number(&name).is_some() && current.as_deref() != Some(&name);
            if stale_unit {
                tracing::info!(path = %self.path.display(), unit = %name, "removing an identity directory an interrupted or finished save left");
                remove_logged(&entry.path(), true);
            } else if name.starts_with(".tmp-")
                || (current.is_some() && files::IDENTITY.contains(&name.as_str()))
            {
                remove_logged(&entry.path(), false);
            }
        }
    }

    /// See [`Storage::load_pending_key`].
    pub fn load_pending_key(&self, parent_sha256: &str) -> Result<Option<String>> {
        let Some(text) = self.read(&self.path, files::PENDING)? else {
            return Ok(None);
        };
        let (first, key) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let bound = first.strip_prefix("parent-sha256 ").map(str::trim);
        if bound == Some(parent_sha256) && key.contains("PRIVATE KEY") {
            return Ok(Some(key.to_string()));
        }
        tracing::info!(path = %self.path.display(), "removing a pending renewal key that is not for the stored identity");
        self.clear_pending_key()?;
        Ok(None)
    }

    /// See [`Storage::save_pending_key`]: temporary file, fsync, rename, fsync of the
    /// directory.
    pub fn save_pending_key(&self, parent_sha256: &str, key_pem: &str) -> Result<()> {
        let body = format!("parent-sha256 {parent_sha256}\n{key_pem}");
        write_atomic(&self.path, files::PENDING, body.as_bytes())?;
        fsync_dir(&self.path)
    }

    /// See [`Storage::clear_pending_key`].
    pub fn clear_pending_key(&self) -> Result<()> {
        let p = self.path.join(files::PENDING);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&p, "removing", &e)),
        }
    }
}

/// Removes a file (or with `dir`, a directory tree), logging a failure other than "gone".
fn remove_logged(path: &Path, dir: bool) {
    let result = if dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a stale file of the data directory; it is ignored and tried again later");
        }
    }
}

/// Writes `dir/name` atomically with mode 0600 (see
/// [`machine_id_destination::write_private_file`]).
fn write_atomic(dir: &Path, name: &str, body: &[u8]) -> Result<()> {
    let dest = dir.join(name);
    machine_id_destination::write_private_file(&dest, body)
        .map_err(|e| io_error(&dest, "writing", &e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    fn sample(n: u32) -> StoredIdentity {
        StoredIdentity {
            key_pem: format!("k{n}"),
            key_pub: format!("kp{n}"),
            ssh_cert: format!("sc{n}"),
            tls_cert_pem: format!("tc{n}"),
            tls_ca_pem: "ca".into(),
            ssh_ca: "sca".into(),
            token_hash: "th".into(),
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn names(p: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn round_trip_modes_and_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        let d = DataDir::open(path.clone()).unwrap();
        assert!(d.load().unwrap().is_none());
        d.save(&sample(1)).unwrap();
        assert_eq!(d.load().unwrap(), Some(sample(1)));
        assert_eq!(mode(&path), 0o700);
        assert_eq!(mode(&path.join("id-1")), 0o700);
        for f in files::IDENTITY {
            assert_eq!(mode(&path.join("current").join(f)), 0o600, "{f}");
        }
        assert_eq!(mode(&path.join(files::LOCK)), 0o600);
        let e = DataDir::open(path.clone()).unwrap_err();
        assert!(matches!(e, BotError::DataDirLocked { .. }), "{e}");
        drop(d);
        DataDir::open(path).unwrap();
    }

    #[test]
    fn each_save_is_a_new_unit_and_the_old_one_goes() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        let d = DataDir::open(path.clone()).unwrap();
        d.save(&sample(1)).unwrap();
        d.save(&sample(2)).unwrap();
        assert_eq!(d.load().unwrap(), Some(sample(2)));
        assert_eq!(
            std::fs::read_link(path.join("current")).unwrap(),
            Path::new("id-2")
        );
        assert_eq!(names(&path), ["current", "id-2", "lock"]);
    }

    /// What a `kill -9` at each step of a save leaves, and what the next open makes of it.
    #[test]
    fn an_interrupted_save_leaves_the_old_identity_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        let d = DataDir::open(path.clone()).unwrap();
        d.save(&sample(1)).unwrap();
        drop(d);
        // Killed while writing id-2: a partial unit, `current` still at id-1.
        std::fs::create_dir(path.join("id-2")).unwrap();
        std::fs::write(path.join("id-2/tokenhash"), "th").unwrap();
        std::fs::write(path.join("id-2/tlscacerts"), "ca").unwrap();
        // Killed after making the temporary link, before the rename.
        std::os::unix::fs::symlink("id-2", path.join(".tmp-current")).unwrap();
        let d = DataDir::open(path.clone()).unwrap();
        assert_eq!(d.load().unwrap(), Some(sample(1)));
        assert_eq!(
            names(&path),
            ["current", "id-1", "lock"],
            "leftovers removed"
        );
        // Killed after the switch, before the old unit was removed.
        d.save(&sample(2)).unwrap();
        drop(d);
        std::fs::create_dir(path.join("id-1")).unwrap();
        std::fs::write(path.join("id-1/key"), "k1").unwrap();
        let d = DataDir::open(path.clone()).unwrap();
        assert_eq!(d.load().unwrap(), Some(sample(2)));
        assert_eq!(names(&path), ["current", "id-2", "lock"]);
        // The next save after leftovers picks a fresh number.
        std::fs::create_dir(path.join("id-9")).unwrap();
        d.save(&sample(3)).unwrap();
        assert_eq!(
            std::fs::read_link(path.join("current")).unwrap(),
            Path::new("id-10")
        );
        assert_eq!(d.load().unwrap(), Some(sample(3)));
    }

    #[test]
    fn the_flat_layout_is_read_and_migrated_by_the_next_save() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        std::fs::create_dir(&path).unwrap();
        let old = sample(1);
        for (name, body) in [
            (files::KEY, &old.key_pem),
            (files::KEY_PUB, &old.key_pub),
            (files::SSH_CERT, &old.ssh_cert),
            (files::TLS_CERT, &old.tls_cert_pem),
            (files::TLS_CA_CERTS, &old.tls_ca_pem),
            (files::SSH_CA_CERTS, &old.ssh_ca),
            (files::TOKEN_HASH, &old.token_hash),
        ] {
            std::fs::write(path.join(name), body).unwrap();
        }
        let d = DataDir::open(path.clone()).unwrap();
        assert_eq!(d.load().unwrap(), Some(old), "the flat layout still loads");
        d.save(&sample(2)).unwrap();
        assert_eq!(d.load().unwrap(), Some(sample(2)));
        assert_eq!(names(&path), ["current", "id-1", "lock"], "flat files gone");
    }

    #[test]
    fn an_incomplete_flat_identity_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join(files::KEY), "k").unwrap();
        let d = DataDir::open(path).unwrap();
        assert_eq!(d.load().unwrap(), None);
    }

    #[test]
    fn a_pointer_outside_the_data_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        std::fs::create_dir(&path).unwrap();
        std::os::unix::fs::symlink("/etc", path.join("current")).unwrap();
        let d = DataDir::open(path).unwrap();
        let e = d.load().unwrap_err().to_string();
        assert!(e.contains("names /etc instead of a unit directory"), "{e}");
    }

    #[test]
    fn an_oversized_file_is_refused_with_its_size() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        let d = DataDir::open(path.clone()).unwrap();
        d.save(&sample(1)).unwrap();
        let f = path.join("current/tlscert");
        std::fs::remove_file(&f).unwrap();
        std::fs::write(&f, vec![b'x'; 2 << 20]).unwrap();
        let e = d.load().unwrap_err().to_string();
        assert!(e.contains("2097152 bytes") && e.contains("tlscert"), "{e}");
    }

    fn pending_semantics(s: &Storage) {
        assert_eq!(s.load_pending_key("aa").unwrap(), None);
        s.save_pending_key("aa", "-----BEGIN PRIVATE KEY-----\nK\n")
            .unwrap();
        // Reused as many times as asked, for the same parent only.
        for _ in 0..2 {
            assert_eq!(
                s.load_pending_key("aa").unwrap().as_deref(),
                Some("-----BEGIN PRIVATE KEY-----\nK\n")
            );
        }
        // Bound to another certificate: ignored and removed.
        assert_eq!(s.load_pending_key("bb").unwrap(), None);
        assert_eq!(s.load_pending_key("aa").unwrap(), None);
        // A save removes it.
        s.save_pending_key("aa", "-----BEGIN PRIVATE KEY-----\nK\n")
            .unwrap();
        s.save(&sample(1)).unwrap();
        assert_eq!(s.load_pending_key("aa").unwrap(), None);
        assert_eq!(s.load().unwrap(), Some(sample(1)));
    }

    #[test]
    fn pending_key_in_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        let s = Storage::directory(&path).unwrap();
        s.save_pending_key("aa", "-----BEGIN PRIVATE KEY-----\nK\n")
            .unwrap();
        assert_eq!(mode(&path.join(files::PENDING)), 0o600);
        s.clear_pending_key().unwrap();
        pending_semantics(&s);
        assert!(!path.join(files::PENDING).exists());
    }

    #[test]
    fn pending_key_in_memory() {
        pending_semantics(&Storage::memory());
    }

    #[test]
    fn an_open_data_dir_is_tightened_to_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _d = DataDir::open(path.clone()).unwrap();
        assert_eq!(mode(&path), 0o700);
    }

    #[test]
    fn a_file_is_not_a_data_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        std::fs::write(&path, "x").unwrap();
        let e = DataDir::open(path).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
    }

    #[test]
    fn debug_shows_nothing() {
        assert!(!format!("{:?}", sample(1)).contains("kp"));
    }
}
