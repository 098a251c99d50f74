//! The bot's AWS credentials, from the usual places in the usual order.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::iam::IamError;

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
            vars: std::env::vars().filter(|(k, _)| k.starts_with("AWS_")).collect(),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    /// A variable, if set and not empty.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// Finds credentials: environment, shared credentials/config profile, container credentials,
/// EC2 instance metadata (IMDSv2), in that order.
pub async fn load_credentials(
    _env: &AwsEnv,
) -> Result<(AwsCredentials, CredentialSource), IamError> {
    Err(IamError::Unimplemented("load_credentials"))
}
