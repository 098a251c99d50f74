//! The crate's one error type.

use std::io;
use std::path::{Path, PathBuf};

use crate::SymlinkPolicy;

/// Everything that can go wrong writing, reading or preparing a destination, or rendering a
/// template.
///
/// Every message is lower-case, names the path involved and, where a person can act, says
/// what to do. Messages never include file contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DestinationError {
    /// Input to a template or to `init_acls` was rejected before anything was written.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What was being validated (e.g. "destination dir for ssh_config").
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// The destination path contains a symlink and the policy refuses symlinks.
    #[error(
        "refusing destination {path}: {symlink} is a symlink and the symlink policy is `{policy}`; \
         point the destination at the real directory, or set `symlinks: insecure` if the link is trusted"
    )]
    SymlinkRefused {
        /// The destination directory (or file) that was being opened.
        path: PathBuf,
        /// The first symlinked component found, or `path` when it could not be pinned down.
        symlink: PathBuf,
        /// The policy in force.
        policy: SymlinkPolicy,
    },

    /// `secure` was asked for but the kernel has no `openat2(2)` (Linux before 5.6).
    #[error(
        "cannot open destination {path} securely: this kernel lacks openat2 (linux 5.6+); \
         upgrade the kernel or set `symlinks: try-secure` (or `insecure`)"
    )]
    SecureUnsupported {
        /// The destination directory.
        path: PathBuf,
    },

    /// The destination path (or one of its parents) exists but is not a directory.
    #[error(
        "destination {path} is not a directory; choose another --destination-dir or remove what is there"
    )]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },

    /// A file of the set is a directory (or other non-file) so it cannot be replaced.
    #[error(
        "cannot replace {path}: it is not a regular file; remove it so tbot can write the destination"
    )]
    NotAFile {
        /// The offending path.
        path: PathBuf,
    },

    /// The process lacks permission for an operation.
    #[error(
        "permission denied {op} {path}: run tbot as the user that owns the destination, \
         or prepare it with `tbot init --destination-dir=... --bot-user=...`"
    )]
    PermissionDenied {
        /// What was being done ("creating", "reading", "renaming into", ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The filesystem is mounted read-only (or the directory is immutable).
    #[error(
        "cannot write {path}: the filesystem is read-only; choose a writable --destination-dir"
    )]
    ReadOnly {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// No space (or quota) left while writing a file of the set.
    #[error(
        "no space left writing {path}: free space or quota on that filesystem; \
         the previous files were left intact"
    )]
    DiskFull {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A file of the set is larger than this crate will read.
    #[error("{path} is larger than {limit} bytes; it is not a file tbot wrote, remove it")]
    TooLarge {
        /// The path involved.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },

    /// Some but not all files of the set exist.
    #[error("destination {path} is incomplete (missing {}); run tbot again to rewrite it", missing.join(", "))]
    Incomplete {
        /// The destination directory.
        path: PathBuf,
        /// The file names that are missing.
        missing: Vec<String>,
    },

    /// A previous write was interrupted part-way through replacing the set (the process died
    /// during the rename phase), so the files may not belong together.
    #[error(
        "destination {path} holds an interrupted write and its files may not belong together; \
         run tbot again to rewrite it"
    )]
    InterruptedWrite {
        /// The destination directory.
        path: PathBuf,
    },

    /// The destination kept changing while being read, for longer than the read timeout.
    #[error("destination {path} kept changing while being read; try again")]
    Busy {
        /// The destination directory.
        path: PathBuf,
    },

    /// A user or group name given to `init_acls` does not exist.
    #[error("no such {kind} `{name}` on this system; create it or pass a numeric id")]
    UnknownUser {
        /// "user" or "group".
        kind: &'static str,
        /// The name that was looked up.
        name: String,
    },

    /// Any other I/O failure.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl DestinationError {
    /// Maps an errno from an operation on `path` to the variant a person can act on.
    pub(crate) fn from_errno(op: &'static str, path: &Path, err: rustix::io::Errno) -> Self {
        use rustix::io::Errno;
        let path = path.to_path_buf();
        let source = io::Error::from(err);
        match err {
            Errno::ACCESS | Errno::PERM => Self::PermissionDenied { op, path, source },
            Errno::ROFS => Self::ReadOnly { path, source },
            Errno::NOSPC | Errno::DQUOT | Errno::FBIG => Self::DiskFull { path, source },
            Errno::NOTDIR => Self::NotADirectory { path },
            Errno::ISDIR => Self::NotAFile { path },
            _ => Self::Io { op, path, source },
        }
    }

    /// Same as [`from_errno`](Self::from_errno) for a `std::io::Error`.
    pub(crate) fn from_io(op: &'static str, path: &Path, err: io::Error) -> Self {
        match err.raw_os_error() {
            Some(code) => Self::from_errno(op, path, rustix::io::Errno::from_raw_os_error(code)),
            None => Self::Io {
                op,
                path: path.to_path_buf(),
                source: err,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_names_the_fix() {
        let p = Path::new("/opt/machine-id/key");
        let e = DestinationError::from_errno("creating", p, rustix::io::Errno::NOSPC);
        assert!(matches!(e, DestinationError::DiskFull { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("/opt/machine-id/key") && msg.contains("intact"),
            "{msg}"
        );
        let e = DestinationError::from_errno("creating", p, rustix::io::Errno::ROFS);
        assert!(matches!(e, DestinationError::ReadOnly { .. }));
        let e = DestinationError::from_errno("creating", p, rustix::io::Errno::ACCESS);
        assert!(
            e.to_string()
                .starts_with("permission denied creating /opt/machine-id/key")
        );
    }
}
