//! The files and directories a config names: the token (or the file holding it), bounded
//! reads of files the user points at, and the overlap check between the data directory and
//! the destinations.

use std::path::{Path, PathBuf};

use machine_id_join::token::TokenSecret;

use crate::{BotError, Result};

/// Resolves the `token` setting: a path to an existing file (or anything starting with `/` or
/// `./`) is read and trimmed; anything else is the token itself.
pub fn resolve_token(value: &str) -> Result<TokenSecret> {
    let path = Path::new(value);
    let looks_like_path =
        value.starts_with('/') || value.starts_with("./") || value.starts_with("../");
    if looks_like_path || path.is_file() {
        let bytes = read_user_file(
            path,
            crate::bounded::TOKEN_FILE_LIMIT,
            "token file",
            "point --token (or onboarding.token) at the file that holds only the token, or pass the token itself",
        )
        .map_err(|e| match e {
            UserFileError::Io(source) => BotError::TokenFile {
                path: path.to_path_buf(),
                source,
            },
            UserFileError::Bot(b) => b,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            BotError::Config(format!(
                "the token file {} is not text; point --token at the file that holds only the token",
                path.display()
            ))
        })?;
        let token = TokenSecret::new(text);
        if token.expose().is_empty() {
            return Err(BotError::Config(format!(
                "the token file {} is empty",
                path.display()
            )));
        }
        return Ok(token);
    }
    Ok(TokenSecret::new(value))
}

/// Why [`read_user_file`] failed.
pub(crate) enum UserFileError {
    /// Opening or reading failed; the caller names the file.
    Io(std::io::Error),
    /// Too large: the full error.
    Bot(BotError),
}

/// Reads a file the user pointed at with a bounded reader; too large is
/// [`BotError::FileTooLarge`] with `what` and `fix`.
pub(crate) fn read_user_file(
    path: &Path,
    limit: u64,
    what: &'static str,
    fix: &'static str,
) -> std::result::Result<Vec<u8>, UserFileError> {
    crate::bounded::read_bounded(path, limit).map_err(|e| match e {
        crate::bounded::ReadError::Io(e) => UserFileError::Io(e),
        crate::bounded::ReadError::TooLarge { size } => {
            UserFileError::Bot(BotError::FileTooLarge {
                what,
                path: path.to_path_buf(),
                size,
                limit,
                fix,
            })
        }
    })
}

/// `path` made absolute with symlinks resolved, as far as it exists: the nearest existing
/// ancestor is canonicalized and the rest appended (`..` and `.` in the rest are applied
/// lexically), so paths that do not exist yet compare as they will once created.
pub fn resolve_lenient(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            let mut out = c;
            for part in rest.iter().rev() {
                match part {
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    std::path::Component::Normal(p) => out.push(p),
                    _ => {}
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// Refuses a destination that is, contains or lies inside the data directory (compared
/// after [`resolve_lenient`], so symlinks and `..` do not hide an overlap).
pub fn check_overlap(data_dir: &Path, destination: &Path) -> Result<()> {
    let data = resolve_lenient(data_dir);
    let dest = resolve_lenient(destination);
    let relation = if data == dest {
        "is"
    } else if dest.starts_with(&data) {
        "lies inside"
    } else if data.starts_with(&dest) {
        "contains"
    } else {
        return Ok(());
    };
    Err(BotError::Overlap {
        destination: destination.to_path_buf(),
        data_dir: data_dir.to_path_buf(),
        relation,
    })
}
