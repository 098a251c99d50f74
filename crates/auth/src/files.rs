//! Files the auth server writes: its data directory and the admin identity for `tctl`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{AuthError, Result};

/// The admin identity's private key file.
pub const ADMIN_KEY_FILE: &str = "key";
/// The admin identity's X.509 certificate (PEM).
pub const ADMIN_CERT_FILE: &str = "tlscert";
/// The TLS CA certificates to trust (PEM).
pub const ADMIN_CAS_FILE: &str = "tlscacerts";

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> AuthError {
    let path = path.to_path_buf();
    move |cause| AuthError::Io { path, what, cause }
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

/// Writes `data` to `path` atomically with mode 0600: a temporary file in the same
/// directory, fsynced, renamed over `path`, and the directory fsynced.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp, "cannot create file"))?;
        f.write_all(data).map_err(io(&tmp, "cannot write file"))?;
        f.sync_all().map_err(io(&tmp, "cannot sync file"))?;
        std::fs::rename(&tmp, path).map_err(io(path, "cannot replace file"))?;
        if let Ok(d) = std::fs::File::open(dir) {
            // Best effort: some file systems refuse to sync a directory.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
