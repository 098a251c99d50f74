//! [`DataDir`]: the locked data directory, its unit directories `id-<n>` switched by the
//! `current` symlink, and the pending renewal key (the layout is in [`super`]).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use super::{FILE_LIMIT, StoredIdentity, files};
use crate::{BotError, Result};

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

    /// See [`Storage::load_pending_key`](super::Storage::load_pending_key).
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

    /// See [`Storage::save_pending_key`](super::Storage::save_pending_key): temporary file,
    /// fsync, rename, fsync of the directory.
    pub fn save_pending_key(&self, parent_sha256: &str, key_pem: &str) -> Result<()> {
        let body = format!("parent-sha256 {parent_sha256}\n{key_pem}");
        write_atomic(&self.path, files::PENDING, body.as_bytes())?;
        fsync_dir(&self.path)
    }

    /// See [`Storage::clear_pending_key`](super::Storage::clear_pending_key).
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
