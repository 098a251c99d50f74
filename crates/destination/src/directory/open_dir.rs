//! [`OpenDir`]: a destination directory opened under a symlink policy (`openat2` with
//! `RESOLVE_NO_SYMLINKS`, or a plain open where allowed), and the file operations done
//! relative to its handle: read, stage, rename, lock, fsync, recover.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::staging::{Marker, Staging, staging_name};
use super::{GENERATION_FILE, READ_LIMIT, SymlinkPolicy, TEMP_PREFIX};
use crate::{ArtifactName, DestinationError};

/// Set once the kernel answered `ENOSYS` to `openat2`.
pub(crate) static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);
/// Set once the `try-secure` fallback warning was logged.
pub(crate) static FALLBACK_WARNED: AtomicBool = AtomicBool::new(false);

/// What to do when `openat2` fails with `errno` under `policy`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Openat2Failure {
    /// Open without `openat2`; log the fallback warning if `true`.
    FallBack { warn: bool },
    /// Refuse: the kernel cannot do what `secure` needs.
    Unsupported,
    /// A real error to report.
    Error,
}

pub(crate) fn on_openat2_error(
    policy: SymlinkPolicy,
    errno: Errno,
    already_warned: bool,
) -> Openat2Failure {
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
    pub(crate) secure: bool,
    pub(crate) policy: SymlinkPolicy,
}

pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

pub(crate) fn open_dir_secure(path: &Path, create: bool) -> Result<OwnedFd, Errno> {
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

pub(crate) fn open_dir_plain(path: &Path, create: bool) -> Result<OwnedFd, DestinationError> {
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
pub(crate) fn find_symlink(path: &Path) -> Option<PathBuf> {
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

    pub(crate) fn file_path(&self, name: &str) -> PathBuf {
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

    pub(crate) fn read_file(&self, name: &str) -> Result<Option<Vec<u8>>, DestinationError> {
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
    pub(crate) fn generation(&self) -> Result<Option<u64>, DestinationError> {
        Ok(self
            .read_file(GENERATION_FILE)?
            .map(|bytes| Marker::parse(&bytes).generation))
    }

    /// The marker: `None` without one.
    pub(crate) fn marker(&self) -> Result<Option<Marker>, DestinationError> {
        Ok(self
            .read_file(GENERATION_FILE)?
            .map(|bytes| Marker::parse(&bytes)))
    }

    /// Finishes the rename phase of the write that `marker` says was interrupted: renames
    /// each of its staging files that is still there over its target (the ones already
    /// renamed are gone), then the "complete" marker. Call with the exclusive lock held.
    /// Every staging file was written and fsynced before the odd marker was renamed into
    /// place, so this always completes that write's set.
    pub(crate) fn roll_forward(
        &self,
        generation: u64,
        nonce: &str,
    ) -> Result<(), DestinationError> {
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
    pub(crate) fn recover_locked(&self) -> Result<bool, DestinationError> {
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

    pub(crate) fn lock(&self, op: FlockOperation) -> Result<bool, DestinationError> {
        loop {
            match rustix::fs::flock(&self.fd, op) {
                Ok(()) => return Ok(true),
                Err(Errno::INTR) => continue,
                Err(Errno::WOULDBLOCK) => return Ok(false),
                Err(e) => return Err(DestinationError::from_errno("locking", &self.path, e)),
            }
        }
    }

    pub(crate) fn fsync(&self) -> Result<(), DestinationError> {
        rustix::fs::fsync(&self.fd)
            .map_err(|e| DestinationError::from_errno("syncing", &self.path, e))
    }

    /// Whether the directory carries a default ACL (set up by `init_acls`).
    pub(crate) fn has_default_acl(&self) -> bool {
        rustix::fs::fgetxattr_query(&self.fd, "system.posix_acl_default").is_ok_and(|n| n > 4)
    }

    pub(crate) fn has_access_acl(&self) -> bool {
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
    pub(crate) fn check_replaceable(&self, name: &str) -> Result<(), DestinationError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
