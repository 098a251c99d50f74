//! Bounded reads of files a user points tbot at (token, CA file, config) and of its own data
//! directory: a file that is far larger than any such file can be is refused with its size,
//! without reading it whole.

use std::fs::File;
use std::io::Read as _;
use std::path::Path;

/// The largest token file read (a token is 32 hex characters; the bound leaves room for
/// whitespace and comments without letting a wrong `--token` path fill memory).
pub const TOKEN_FILE_LIMIT: u64 = 64 * 1024;
/// The largest CA file (`--ca-path`, `onboarding.ca_path`) read.
pub const CA_FILE_LIMIT: u64 = 1024 * 1024;
/// The largest config file (`-c`) read.
pub const CONFIG_FILE_LIMIT: u64 = 1024 * 1024;

/// Why a bounded read failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Opening or reading failed.
    Io(std::io::Error),
    /// More than the limit: `size` is the file's size when `fstat` knows it (not for pipes
    /// and the like).
    TooLarge { size: Option<u64> },
}

/// Reads at most `limit` bytes of `path`; more is [`ReadError::TooLarge`]. The read itself is
/// bounded (`take(limit + 1)`), so neither a huge file nor an endless one (`/dev/zero`, a
/// pipe) is read whole; the size in the error comes from `fstat` of the open file.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = File::open(path).map_err(ReadError::Io)?;
    let mut buf = Vec::new();
    (&file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(ReadError::Io)?;
    if u64::try_from(buf.len()).unwrap_or(u64::MAX) > limit {
        let size = file.metadata().ok().map(|m| m.len()).filter(|&n| n > limit);
        return Err(ReadError::TooLarge { size });
    }
    Ok(buf)
}

/// `"70000 bytes"`, or `"more than LIMIT bytes"` when the size is unknown.
pub(crate) fn size_text(size: Option<u64>, limit: u64) -> String {
    match size {
        Some(n) => format!("{n} bytes"),
        None => format!("more than {limit} bytes"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn reads_up_to_the_limit_and_refuses_more_with_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![b'a'; 100]).unwrap();
        assert_eq!(read_bounded(&p, 100).unwrap().len(), 100);
        match read_bounded(&p, 99) {
            Err(ReadError::TooLarge { size }) => assert_eq!(size, Some(100)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_endless_file_is_not_read_whole() {
        match read_bounded(Path::new("/dev/zero"), 4096) {
            Err(ReadError::TooLarge { size }) => assert_eq!(size, None),
            other => panic!("{other:?}"),
        }
        assert_eq!(size_text(None, 4096), "more than 4096 bytes");
    }
}
