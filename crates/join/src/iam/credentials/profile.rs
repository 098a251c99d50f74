//! The shared AWS files: the INI dialect of `~/.aws/credentials` and `~/.aws/config`, and the
//! static credentials of a profile in them.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{AwsCredentials, AwsEnv, CredentialSource};
use crate::iam::IamError;

/// An INI file: section name to keys and values.
pub(super) type Ini = HashMap<String, HashMap<String, String>>;

/// Parses the AWS INI dialect: `[section]`, `key = value`, full-line comments with `#` or
/// `;`. Indented lines (sub-sections such as `s3 =` blocks) are skipped; the first occurrence
/// of a section or key wins.
pub(super) fn parse_ini(text: &str) -> Ini {
    let mut ini = Ini::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        let indented = line.starts_with([' ', '\t']);
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            section = name.split_once(']').map(|(n, _)| n.trim().to_string());
            if let Some(s) = &section {
                ini.entry(s.clone()).or_default();
            }
            continue;
        }
        if indented {
            continue;
        }
        let (Some(s), Some((k, v))) = (&section, line.split_once('=')) else {
            continue;
        };
        if let Some(keys) = ini.get_mut(s) {
            keys.entry(k.trim().to_ascii_lowercase())
                .or_insert_with(|| v.trim().to_string());
        }
    }
    ini
}

/// The config file's section for `profile`: `[profile name]`, or `[default]` for the default.
pub(super) fn config_section<'a>(
    ini: &'a Ini,
    profile: &str,
) -> Option<&'a HashMap<String, String>> {
    let key = format!("profile {profile}");
    ini.iter()
        .find(|(name, _)| name.split_whitespace().collect::<Vec<_>>().join(" ") == key)
        .map(|(_, v)| v)
        .or_else(|| (profile == "default").then(|| ini.get("default")).flatten())
}

/// Keys of a profile that get credentials in ways not supported yet.
pub(super) const UNSUPPORTED_KEYS: &[&str] = &[
    "role_arn",
    "source_profile",
    "credential_source",
    "credential_process",
    "web_identity_token_file",
    "sso_session",
    "sso_start_url",
    "sso_account_id",
    "sso_role_name",
    "sso_region",
    "login_session",
];

/// What the shared files gave.
pub(super) enum ProfileOutcome {
    Found(AwsCredentials, CredentialSource),
    /// Nothing usable; why (for the combined error).
    Nothing(String),
}

/// The shared-files step of the chain.
pub(super) fn profile_credentials(env: &AwsEnv) -> Result<ProfileOutcome, IamError> {
    let (profile, explicit) = env.profile();
    let mut searched = Vec::new();
    let mut sections: Vec<(PathBuf, HashMap<String, String>)> = Vec::new();
    for (path, is_config) in [(env.credentials_file(), false), (env.config_file(), true)] {
        let Some(path) = path else {
            searched.push(format!(
                "no {} file (no home directory)",
                if is_config { "config" } else { "credentials" }
            ));
            continue;
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                searched.push(format!("{} (no such file)", path.display()));
                continue;
            }
            Err(e) => {
                searched.push(format!("{} (unreadable: {e})", path.display()));
                continue;
            }
        };
        let ini = parse_ini(&text);
        let section = if is_config {
            config_section(&ini, &profile)
        } else {
            ini.get(&profile)
        };
        match section {
            Some(keys) => {
                searched.push(format!("{} (has the profile)", path.display()));
                sections.push((path, keys.clone()));
            }
            None => searched.push(format!("{} (no such profile)", path.display())),
        }
    }
    let searched = searched.join(", ");
    if sections.is_empty() {
        if explicit {
            return Err(IamError::ProfileNotFound { profile, searched });
        }
        return Ok(ProfileOutcome::Nothing(format!(
            "shared files: no profile {profile:?} in {searched}"
        )));
    }
    // The credentials file comes first, so it wins.
    for (path, keys) in &sections {
        let id = keys.get("aws_access_key_id").filter(|v| !v.is_empty());
        let secret = keys.get("aws_secret_access_key").filter(|v| !v.is_empty());
        let file = path.display().to_string();
        match (id, secret) {
            (Some(id), Some(secret)) => {
                return Ok(ProfileOutcome::Found(
                    AwsCredentials {
                        access_key_id: id.clone(),
                        secret_access_key: secret.clone(),
                        session_token: keys
                            .get("aws_session_token")
                            .filter(|v| !v.is_empty())
                            .cloned(),
                    },
                    CredentialSource::Profile {
                        profile,
                        file: path.clone(),
                    },
                ));
            }
            (Some(_), None) => {
                return Err(IamError::ProfileIncomplete {
                    profile,
                    file,
                    present: "aws_access_key_id",
                    missing: "aws_secret_access_key",
                });
            }
            (None, Some(_)) => {
                return Err(IamError::ProfileIncomplete {
                    profile,
                    file,
                    present: "aws_secret_access_key",
                    missing: "aws_access_key_id",
                });
            }
            (None, None) => {}
        }
    }
    for (path, keys) in &sections {
        let mut used: Vec<&str> = UNSUPPORTED_KEYS
            .iter()
            .copied()
            .filter(|k| keys.contains_key(*k))
            .collect();
        used.sort_unstable();
        if !used.is_empty() {
            return Err(IamError::ProfileUnsupported {
                profile,
                file: path.display().to_string(),
                keys: used.join(", "),
            });
        }
    }
    Ok(ProfileOutcome::Nothing(format!(
        "shared files: profile {profile:?} has no aws_access_key_id/aws_secret_access_key ({searched})"
    )))
}
