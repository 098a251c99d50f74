//! Files the auth server writes and reads: its data directory, the admin identity for `tctl`,
//! bounded reads of files a user points it at, and the mode of private key files.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{AuthError, Result};

use machine_id_destination::ArtifactName;

/// The admin identity's private key file.
pub const ADMIN_KEY_FILE: &str = ArtifactName::Key.file_name();
/// The admin identity's X.509 certificate (PEM).
pub const ADMIN_CERT_FILE: &str = ArtifactName::TlsCert.file_name();
/// The TLS CA certificates to trust (PEM).
pub const ADMIN_CAS_FILE: &str = ArtifactName::TlsCaCerts.file_name();

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> AuthError {
    let path = path.to_path_buf();
    move |cause| AuthError::Io { path, what, cause }
}

/// The most a configuration or key file the server reads may hold (1 MiB).
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// A file over a size limit: names the file, its size and the limit.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path} is too large for {what}: {size_text}, over the limit of {limit} bytes ({limit_text}); is this the right file?"
)]
pub struct FileTooLarge {
    /// The file.
    pub path: PathBuf,
    /// What the file was read as (`a configuration file`, `a private key`).
    pub what: &'static str,
    /// Its size, when the file says (a regular file; not a pipe or device).
    pub size: Option<u64>,
    /// The size for people: `2097152 bytes`, or `more than 1048576 bytes`.
    pub size_text: String,
    /// The limit in bytes.
    pub limit: u64,
    /// The limit for people (`1 MiB`).
    pub limit_text: String,
}

/// `1 MiB`, `4 MiB`, `512 KiB`, `100 bytes`.
pub(crate) fn size_text(n: u64) -> String {
    if n >= 1024 * 1024 && n.is_multiple_of(1024 * 1024) {
        format!("{} MiB", n / (1024 * 1024))
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

/// Why a bounded read failed.
#[derive(Debug)]
pub(crate) enum BoundedReadError {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// The file is over the limit.
    TooLarge(FileTooLarge),
}

/// Reads `path` through a reader that stops after `limit + 1` bytes, so neither a huge file
/// nor an endless one (`/dev/zero`, a FIFO) is read whole. `what` names the file's role in
/// the error.
pub(crate) fn read_bounded(
    path: &Path,
    limit: u64,
    what: &'static str,
) -> std::result::Result<Vec<u8>, BoundedReadError> {
    let f = std::fs::File::open(path).map_err(BoundedReadError::Io)?;
    let declared = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
    let mut data = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut data)
        .map_err(BoundedReadError::Io)?;
    if data.len() as u64 > limit {
        return Err(BoundedReadError::TooLarge(FileTooLarge {
            path: path.to_path_buf(),
            what,
            size: declared,
            size_text: match declared {
                Some(n) if n > limit => format!("{n} bytes"),
                _ => format!("more than {limit} bytes"),
            },
            limit,
            limit_text: size_text(limit),
        }));
    }
    Ok(data)
}

/// [`read_bounded`] with [`MAX_FILE_SIZE`], as UTF-8 text, errors as [`AuthError`].
pub(crate) fn read_text_bounded(path: &Path, what: &'static str) -> Result<String> {
    let data = read_bounded(path, MAX_FILE_SIZE, what).map_err(|e| match e {
        BoundedReadError::Io(cause) => AuthError::Io {
            path: path.to_path_buf(),
            what: "cannot read file",
            cause,
        },
        BoundedReadError::TooLarge(e) => AuthError::FileTooLarge(e),
    })?;
    String::from_utf8(data).map_err(|_| AuthError::Io {
        path: path.to_path_buf(),
        what: "not UTF-8 text",
        cause: std::io::Error::from(std::io::ErrorKind::InvalidData),
    })
}

/// Makes sure the private file `path` (a key, or the store holding the CA keys) is readable
/// by its owner only: a mode with group or other bits is set to 0600 with a warning; when
/// that fails (the file belongs to someone else) the server refuses to use it. A missing
/// file is fine.
pub(crate) fn ensure_private_file(path: &Path, what: &'static str) -> Result<()> {
    // Followed through a symlink: a store kept on another disk is fine, its mode is not.
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(cause) => {
            return Err(AuthError::Io {
                path: path.to_path_buf(),
                what: "cannot read the file's mode",
                cause,
            });
        }
    };
    if !meta.is_file() {
        return Err(AuthError::InsecureFile {
            path: path.to_path_buf(),
            what,
            mode: meta.permissions().mode() & 0o7777,
            problem: "is not a regular file".into(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Ok(()) => {
            tracing::warn!(path = %path.display(), file = what, old_mode = %format!("{mode:04o}"), "private file was accessible to group or others; set its mode to 0600");
            Ok(())
        }
        Err(cause) => Err(AuthError::InsecureFile {
            path: path.to_path_buf(),
            what,
            mode,
            problem: format!(
                "is accessible to group or others and its mode cannot be changed to 0600 ({cause})"
            ),
        }),
    }
}

/// Sets `path` to 0600 if it exists with group or other bits (no warning: for files the
/// server itself just created with the umask's mode).
pub(crate) fn restrict_to_owner(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(io(path, "cannot set permissions 0600"))
        }
        _ => Ok(()),
    }
}

/// Takes an exclusive, non-blocking `flock` on `DIR/auth-server.lock` (created 0600), held
/// until the returned file is dropped. `hint` says what to do when another process holds it.
pub(crate) fn lock_data_dir(dir: &Path, hint: &'static str) -> Result<std::fs::File> {
    let path = dir.join(crate::server::LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path, "cannot open the data directory's lock file"))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuthError::DataDirInUse {
            data_dir: dir.to_path_buf(),
            lock_file: path,
            hint,
        }),
        Err(std::fs::TryLockError::Error(cause)) => Err(AuthError::Io {
            path,
            what: "cannot lock the data directory",
            cause,
        }),
    }
}

/// Creates `dir` (and parents) with mode 0700 where it is created; when `tighten`, also sets
/// 0700 on an existing `dir`.
pub(crate) fn ensure_private_dir(dir: &Path, tighten: bool) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir, "cannot create directory"))?;
    if tighten {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(dir, "cannot set permissions 0700"))?;
    }
    Ok(())
}

/// Writes `data` to `path` atomically with mode 0600 (see
/// [`machine_id_destination::write_private_file`]).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    machine_id_destination::write_private_file(path, data).map_err(io(path, "cannot write file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_is_private_and_replaces() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("a/admin");
        ensure_private_dir(&dir, true).expect("dir");
        let mode = std::fs::metadata(&dir).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let p = dir.join("key");
        write_atomic(&p, b"one").expect("write");
        write_atomic(&p, b"two").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(&dir).expect("ls").count(),
            1,
            "no temp files left"
        );
    }
}
