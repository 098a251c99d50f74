//! The directory destination: atomic set writes, 0600 files, symlink policy.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::fd::AsFd;
use rustix::fs::FlockOperation;

use crate::{ArtifactName, Artifacts, Destination, DestinationError};

mod open_dir;
mod policy;
mod staging;

pub(crate) use open_dir::OpenDir;
use staging::{Staging, staging_name};

pub use policy::SymlinkPolicy;

/// The name of the generation marker a [`DirectoryDestination`] keeps next to the set.
pub const GENERATION_FILE: &str = ".tbot-generation";
/// The prefix of staging files; leftovers are removed by the next write.
pub(crate) const TEMP_PREFIX: &str = ".tbot-tmp-";
/// The largest file [`DirectoryDestination::read`] accepts.
const READ_LIMIT: u64 = 1 << 20;
/// How long [`DirectoryDestination::read`] retries while a writer keeps changing the set.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

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
