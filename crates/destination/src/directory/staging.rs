//! One write's staging: the generation marker's contents, the staging files named by the
//! write's nonce, and their removal when the write fails before its renames.

use std::fs::File;
use std::io::Write as _;

use rustix::fd::AsFd;
use rustix::fs::{AtFlags, Mode, OFlags};

use super::TEMP_PREFIX;
use super::open_dir::OpenDir;
use crate::DestinationError;

/// The generation marker's contents: the generation, and for an odd ("write in progress")
/// marker the nonce naming that write's staging files (`.tbot-tmp-<nonce>-<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) generation: u64,
    pub(crate) nonce: Option<String>,
}

impl Marker {
    /// Parses `"<generation>\n[<nonce>\n]"`. An unreadable marker counts as an interrupted
    /// write (generation 1) without a nonce, so it is reported, never rolled forward.
    pub(crate) fn parse(bytes: &[u8]) -> Self {
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
pub(crate) fn is_nonce(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
}

/// The staging file of `target` for the write `nonce`.
pub(crate) fn staging_name(nonce: &str, target: &str) -> String {
    format!("{TEMP_PREFIX}{nonce}-{target}")
}

/// Staging files of one write; any not yet renamed are removed on drop.
pub(crate) struct Staging<'a> {
    pub(crate) dir: &'a OpenDir,
    pub(crate) temps: Vec<(String, &'static str)>,
    pub(crate) nonce: String,
}

impl<'a> Staging<'a> {
    pub(crate) fn new(dir: &'a OpenDir) -> Self {
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
    pub(crate) fn stage(
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
    pub(crate) fn commit(&mut self, target: &str) -> Result<(), DestinationError> {
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
