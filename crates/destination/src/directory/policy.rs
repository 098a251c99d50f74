//! [`SymlinkPolicy`]: how a directory destination treats symlinks, and its spellings.

use std::fmt;
use std::str::FromStr;

use crate::DestinationError;

/// How a [`DirectoryDestination`](crate::DirectoryDestination) treats symlinks in the destination path.
///
/// Serialized in lower case as in tbot's config: `secure`, `try-secure`, `insecure`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SymlinkPolicy {
    /// Refuse any symlink anywhere in the destination path and in place of any file of the
    /// set: the directory is opened with `openat2(2)` and `RESOLVE_NO_SYMLINKS`, and every file
    /// is then created, renamed and read relative to that directory handle. Fails on kernels
    /// without `openat2` (Linux < 5.6).
    Secure,
    /// `secure` where the kernel has `openat2`; elsewhere fall back to `insecure` with one
    /// warning per process. The default.
    #[default]
    TrySecure,
    /// Follow symlinks in the destination path (and in place of files when reading).
    Insecure,
}

impl SymlinkPolicy {
    /// The config spelling: `secure`, `try-secure` or `insecure`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SymlinkPolicy::Secure => "secure",
            SymlinkPolicy::TrySecure => "try-secure",
            SymlinkPolicy::Insecure => "insecure",
        }
    }
}

impl fmt::Display for SymlinkPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SymlinkPolicy {
    type Err = DestinationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "secure" => Ok(SymlinkPolicy::Secure),
            "try-secure" => Ok(SymlinkPolicy::TrySecure),
            "insecure" => Ok(SymlinkPolicy::Insecure),
            other => Err(DestinationError::InvalidInput {
                what: "symlink policy",
                reason: format!("`{other}` (expected secure, try-secure or insecure)"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_spellings() {
        for (p, s) in [
            (SymlinkPolicy::Secure, "secure"),
            (SymlinkPolicy::TrySecure, "try-secure"),
            (SymlinkPolicy::Insecure, "insecure"),
        ] {
            assert_eq!(p.to_string(), s);
            assert_eq!(s.parse::<SymlinkPolicy>().ok(), Some(p));
            assert_eq!(serde_json::to_string(&p).ok(), Some(format!("\"{s}\"")));
            assert_eq!(
                serde_json::from_str::<SymlinkPolicy>(&format!("\"{s}\"")).ok(),
                Some(p)
            );
        }
        assert_eq!(SymlinkPolicy::default(), SymlinkPolicy::TrySecure);
        assert!("try_secure".parse::<SymlinkPolicy>().is_err());
        assert!(serde_json::from_str::<SymlinkPolicy>("\"trysecure\"").is_err());
    }
}
