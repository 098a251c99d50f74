//! The SQLite store's file: created private (mode 0600, its directory entry synced), modes of
//! older files tightened, and connections opened and configured (WAL, `synchronous=FULL`,
//! busy timeout, read-only readers).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{BUSY_TIMEOUT, sql_err};
use crate::StoreError;

/// Creates the file with mode 0600, or tightens the mode of an existing one.
pub(super) fn prepare_file(path: &Path, location: &str) -> Result<(), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        return Err(StoreError::Backend(format!(
            "sqlite store {location}: the directory {} does not exist: create it (mode 0700) \
             or point the data dir somewhere else",
            parent.display()
        )));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let opened = match options.open(path) {
        Ok(file) => {
            sync_parent(path);
            Ok(file)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path),
        Err(e) => Err(e),
    };
    let file = opened.map_err(|e| {
        StoreError::Backend(format!(
            "sqlite store {location}: cannot open: {e}: check that it is a file this user can \
             read and write"
        ))
    })?;
    #[cfg(unix)]
    {
        let meta = file.metadata().map_err(|e| {
            StoreError::Backend(format!("sqlite store {location}: cannot stat: {e}"))
        })?;
        tighten_mode(path, &meta);
    }
    drop(file);
    Ok(())
}

/// Makes a new file's directory entry durable (SQLite syncs the file, not its directory).
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Err(error) = std::fs::File::open(parent).and_then(|dir| dir.sync_all()) {
            tracing::warn!(path = %parent.display(), %error, "cannot sync the store's directory");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Removes group and other permissions from a file that has them.
#[cfg(unix)]
fn tighten_mode(path: &Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "store file was readable by others; setting mode 0600"
        );
        if let Err(error) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), %error, "cannot set mode 0600 on store file");
        }
    }
}

/// The `-wal` and `-shm` files take the main file's mode when SQLite creates them; this
/// fixes ones left by an older, looser file.
pub(super) fn tighten_sidecars(path: &Path) {
    #[cfg(unix)]
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let sidecar = PathBuf::from(name);
        if let Ok(meta) = std::fs::metadata(&sidecar) {
            tighten_mode(&sidecar, &meta);
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Read-write, no URI interpretation (a path is a path, even one starting with `file:`); the
/// file exists already ([`prepare_file`]). Each connection is used by one thread at a time.
pub(super) fn open_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

pub(super) fn configure_writer(conn: &Connection, location: &str) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_err(location, "cannot configure", e))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| sql_err(location, "cannot switch to WAL mode", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "sqlite store {location}: cannot switch to WAL mode (still {mode}): put the data dir \
             on a local filesystem"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| sql_err(location, "cannot configure", e))?;
    Ok(())
}

pub(super) fn open_reader(path: &Path, location: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, open_flags())
        .map_err(|e| sql_err(location, "cannot open", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_err(location, "cannot configure", e))?;
    conn.pragma_update(None, "query_only", true)
        .map_err(|e| sql_err(location, "cannot configure", e))?;
    Ok(conn)
}
