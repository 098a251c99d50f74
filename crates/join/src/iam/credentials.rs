//! The bot's AWS credentials, from the usual places in the usual order.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::iam::IamError;
use crate::iam::http::{Url, sanitize};

mod metadata;
mod profile;

use metadata::{
    METADATA_LIMITS, container_credentials, container_url, instance_credentials, scheme_str,
};
use profile::{ProfileOutcome, config_section, parse_ini, profile_credentials};

/// AWS credentials. `Debug` never shows the secret or the session token.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// The access key id (`AKIA...`/`ASIA...`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token of temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where the credentials came from (for logs and error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialSource {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    Environment,
    /// A profile of the shared credentials or config file.
    Profile {
        /// The profile name.
        profile: String,
        /// The file it was read from.
        file: PathBuf,
    },
    /// The ECS/EKS container credentials endpoint.
    Container {
        /// The URL asked.
        url: String,
    },
    /// The EC2 instance metadata service (IMDSv2).
    InstanceMetadata {
        /// The instance role's name.
        role: String,
    },
}

/// The environment the credential chain and endpoint resolution read: variables and the home
/// directory. [`AwsEnv::from_process`] takes the real ones; tests build their own.
#[derive(Debug, Clone, Default)]
pub struct AwsEnv {
    /// Environment variables (only `AWS_*` ones matter).
    pub vars: HashMap<String, String>,
    /// The home directory, for `~/.aws/credentials` and `~/.aws/config`.
    pub home: Option<PathBuf>,
}

impl AwsEnv {
    /// The process's environment and home directory.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars()
                .filter(|(k, _)| k.starts_with("AWS_"))
                .collect(),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    /// A variable, if set and not empty.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

impl AwsEnv {
    /// The profile the shared files are read for: `AWS_PROFILE`, else `default`; and whether
    /// it was named explicitly.
    fn profile(&self) -> (String, bool) {
        match self.var("AWS_PROFILE") {
            Some(p) => (p.to_string(), true),
            None => ("default".to_string(), false),
        }
    }

    /// A path from a variable (with `~/` expanded) or `~/.aws/<file>`.
    fn aws_file(&self, var: &str, file: &str) -> Option<PathBuf> {
        match self.var(var) {
            Some(p) => Some(match (p.strip_prefix("~/"), &self.home) {
                (Some(rest), Some(home)) => home.join(rest),
                _ => PathBuf::from(p),
            }),
            None => self.home.as_ref().map(|h| h.join(".aws").join(file)),
        }
    }

    /// The shared credentials file: `AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`.
    pub fn credentials_file(&self) -> Option<PathBuf> {
        self.aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
    }

    /// The shared config file: `AWS_CONFIG_FILE` or `~/.aws/config`.
    pub fn config_file(&self) -> Option<PathBuf> {
        self.aws_file("AWS_CONFIG_FILE", "config")
    }

    /// The region: `AWS_REGION`, then `AWS_DEFAULT_REGION`, then `region` in the profile's
    /// section of the config file (read from disk, synchronously).
    pub fn region(&self) -> Option<String> {
        if let Some(r) = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .filter_map(|v| self.var(v))
            .map(str::trim)
            .find(|r| !r.is_empty())
        {
            return Some(r.to_string());
        }
        let (profile, _) = self.profile();
        let text = std::fs::read_to_string(self.config_file()?).ok()?;
        config_section(&parse_ini(&text), &profile)?
            .get("region")
            .filter(|r| !r.is_empty())
            .cloned()
    }
}

/// Finds credentials: environment, shared credentials/config profile, container credentials,
/// EC2 instance metadata (IMDSv2), in that order.
///
/// 1. `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (with `AWS_SESSION_TOKEN` if set); one
///    without the other is an error.
/// 2. The profile `AWS_PROFILE` (else `default`) of the shared credentials file, then of the
///    config file (`[profile name]`). A profile named explicitly but found nowhere is an
///    error, as is one that gets credentials through roles, processes or SSO (not supported).
/// 3. The container endpoint (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`, with
///    `AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)`); once configured, its failure is an error.
/// 4. IMDSv2 at `AWS_EC2_METADATA_SERVICE_ENDPOINT` or `http://169.254.169.254`, unless
///    `AWS_EC2_METADATA_DISABLED=true`; 1 s to connect, 5 s in all.
///
/// When none gives credentials, [`IamError::NoCredentials`] lists each place and why.
pub async fn load_credentials(
    env: &AwsEnv,
) -> Result<(AwsCredentials, CredentialSource), IamError> {
    let mut tried = Vec::new();

    match (
        env.var("AWS_ACCESS_KEY_ID"),
        env.var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => {
            tracing::debug!(source = "environment", access_key_id = %id, "AWS credentials found");
            return Ok((
                AwsCredentials {
                    access_key_id: id.to_string(),
                    secret_access_key: secret.to_string(),
                    session_token: env.var("AWS_SESSION_TOKEN").map(str::to_string),
                },
                CredentialSource::Environment,
            ));
        }
        (Some(_), None) => {
            return Err(IamError::EnvCredentialsIncomplete {
                set: "AWS_ACCESS_KEY_ID",
                missing: "AWS_SECRET_ACCESS_KEY",
            });
        }
        (None, Some(_)) => {
            return Err(IamError::EnvCredentialsIncomplete {
                set: "AWS_SECRET_ACCESS_KEY",
                missing: "AWS_ACCESS_KEY_ID",
            });
        }
        (None, None) => tried.push(
            "environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set".to_string(),
        ),
    }

    match profile_credentials(env)? {
        ProfileOutcome::Found(creds, source) => {
            tracing::debug!(?source, access_key_id = %creds.access_key_id, "AWS credentials found");
            return Ok((creds, source));
        }
        ProfileOutcome::Nothing(why) => tried.push(why),
    }

    match container_url(env)? {
        Some(url) => {
            let creds = container_credentials(env, &url).await?;
            let url = format!("{}://{}{}", scheme_str(url.scheme), url.authority(), url.path);
            tracing::debug!(source = "container", %url, access_key_id = %creds.access_key_id, "AWS credentials found");
            return Ok((creds, CredentialSource::Container { url }));
        }
        None => tried.push(
            "container credentials: neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor AWS_CONTAINER_CREDENTIALS_FULL_URI is set"
                .to_string(),
        ),
    }

    if env
        .var("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        tried.push("EC2 instance metadata: disabled by AWS_EC2_METADATA_DISABLED=true".into());
    } else {
        let endpoint = env
            .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or("http://169.254.169.254");
        match Url::parse(endpoint) {
            Err(e) => tried.push(format!(
                "EC2 instance metadata: AWS_EC2_METADATA_SERVICE_ENDPOINT {:?} is not a usable URL: {e}",
                sanitize(endpoint, 200)
            )),
            Ok(base) => {
                match tokio::time::timeout(METADATA_LIMITS.total, instance_credentials(&base))
                    .await
                {
                    Ok(Ok((creds, role))) => {
                        tracing::debug!(source = "imds", %role, access_key_id = %creds.access_key_id, "AWS credentials found");
                        return Ok((creds, CredentialSource::InstanceMetadata { role }));
                    }
                    Ok(Err(why)) => tried.push(format!(
                        "EC2 instance metadata at {}: {why}",
                        sanitize(endpoint, 200)
                    )),
                    Err(_) => tried.push(format!(
                        "EC2 instance metadata at {}: no answer within {:?}",
                        sanitize(endpoint, 200),
                        METADATA_LIMITS.total
                    )),
                }
            }
        }
    }

    tracing::debug!(?tried, "no AWS credentials found");
    Err(IamError::NoCredentials { tried })
}

#[cfg(test)]
mod tests;
