//! Where the bot keeps its own renewable identity: a data directory or memory.
//!
//! The data directory holds `key`, `key.pub`, `sshcert`, `tlscert`, `tlscacerts`,
//! `sshcacerts` and `tokenhash` (the SHA-256 of the token that joined, so a changed token
//! means a fresh join), plus `lock`, which an exclusive `flock` holds for the life of the
//! process so two tbots never share one directory. The directory is 0700, files are 0600
//! and each is replaced atomically (temporary file, fsync, rename, fsync of the directory).
//! Files are renamed certificates first, key last; on load a key that does not match the
//! certificate (a crash between renames) is treated as no identity at all.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::fs::FlockOperation;

use crate::{BotError, Result};

/// The files of a stored identity.
pub mod files {
    /// Private key, PEM.
    pub const KEY: &str = "key";
    /// Public key, OpenSSH line.
    pub const KEY_PUB: &str = "key.pub";
    /// SSH certificate line.
    pub const SSH_CERT: &str = "sshcert";
    /// X.509 certificate, PEM.
    pub const TLS_CERT: &str = "tlscert";
    /// The cluster's TLS CA certificates, PEM.
    pub const TLS_CA_CERTS: &str = "tlscacerts";
    /// The cluster's SSH CA keys, one line each.
    pub const SSH_CA_CERTS: &str = "sshcacerts";
    /// SHA-256 (hex) of the token that joined.
    pub const TOKEN_HASH: &str = "tokenhash";
    /// Held with an exclusive `flock` while a tbot uses the directory.
    pub const LOCK: &str = "lock";
}

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
    Memory(Arc<Mutex<Option<StoredIdentity>>>),
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

    /// The stored identity, if any.
    pub fn load(&self) -> Result<Option<StoredIdentity>> {
        match self {
            Self::Directory(d) => d.load(),
            Self::Memory(m) => Ok(m.lock().unwrap_or_else(PoisonError::into_inner).clone()),
        }
    }

    /// Replaces the stored identity.
    pub fn save(&self, id: &StoredIdentity) -> Result<()> {
        match self {
            Self::Directory(d) => d.save(id),
            Self::Memory(m) => {
                *m.lock().unwrap_or_else(PoisonError::into_inner) = Some(id.clone());
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
        std::io::ErrorKind::StorageFull => {
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

impl DataDir {
    /// Creates the directory (0700) if missing, tightens an existing one that others may
    /// read to 0700 (with a warning), and takes the exclusive lock.
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
        Ok(Self { path, _lock: lock })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self, name: &str) -> Result<Option<String>> {
        let p = self.path.join(name);
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&p, "reading", &e)),
        }
    }

    /// The stored identity; `None` when there is none or it is incomplete.
    pub fn load(&self) -> Result<Option<StoredIdentity>> {
        let mut parts = Vec::new();
        for name in [
            files::KEY,
            files::KEY_PUB,
            files::SSH_CERT,
            files::TLS_CERT,
            files::TLS_CA_CERTS,
            files::SSH_CA_CERTS,
        ] {
            match self.read(name)? {
                Some(s) => parts.push(s),
                None => {
                    if !parts.is_empty() {
                        tracing::warn!(path = %self.path.display(), missing = name, "the stored identity is incomplete; joining again");
                    }
                    return Ok(None);
                }
            }
        }
        let token_hash = self.read(files::TOKEN_HASH)?.unwrap_or_default();
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

    /// Writes every file atomically, key last.
    pub fn save(&self, id: &StoredIdentity) -> Result<()> {
        for (name, body) in [
            (files::TOKEN_HASH, id.token_hash.as_str()),
            (files::TLS_CA_CERTS, id.tls_ca_pem.as_str()),
            (files::SSH_CA_CERTS, id.ssh_ca.as_str()),
            (files::SSH_CERT, id.ssh_cert.as_str()),
            (files::TLS_CERT, id.tls_cert_pem.as_str()),
            (files::KEY_PUB, id.key_pub.as_str()),
            (files::KEY, id.key_pem.as_str()),
        ] {
            write_atomic(&self.path, name, body.as_bytes())?;
        }
        let dir = File::open(&self.path).map_err(|e| io_error(&self.path, "opening", &e))?;
        dir.sync_all()
            .map_err(|e| io_error(&self.path, "syncing", &e))?;
        Ok(())
    }
}

/// Writes `dir/name` through a 0600 temporary file, fsync and rename.
fn write_atomic(dir: &Path, name: &str, body: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".tmp-{name}"));
    let dest = dir.join(name);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dest)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(&dest, "writing", &e)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    fn sample() -> StoredIdentity {
        StoredIdentity {
            key_pem: "k".into(),
            key_pub: "kp".into(),
            ssh_cert: "sc".into(),
            tls_cert_pem: "tc".into(),
            tls_ca_pem: "ca".into(),
            ssh_ca: "sca".into(),
            token_hash: "th".into(),
        }
    }

    #[test]
    fn round_trip_modes_and_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        let d = DataDir::open(path.clone()).unwrap();
        assert!(d.load().unwrap().is_none());
        d.save(&sample()).unwrap();
        assert_eq!(d.load().unwrap(), Some(sample()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o700);
        for f in [files::KEY, files::TLS_CERT, files::TOKEN_HASH, files::LOCK] {
            assert_eq!(mode(&path.join(f)), 0o600, "{f}");
        }
        let e = DataDir::open(path.clone()).unwrap_err();
        assert!(matches!(e, BotError::DataDirLocked { .. }), "{e}");
        drop(d);
        DataDir::open(path).unwrap();
    }

    #[test]
    fn an_open_data_dir_is_tightened_to_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _d = DataDir::open(path.clone()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
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
        assert!(!format!("{:?}", sample()).contains("kp"));
    }
}
