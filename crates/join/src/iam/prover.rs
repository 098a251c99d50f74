//! The bot's half of an `iam` join in one piece: load this machine's AWS credentials once per
//! join, pick the STS endpoint, and sign the server's challenge into the serialized
//! `sts:GetCallerIdentity` request the auth server forwards.

use std::time::SystemTime;

use crate::iam::{
    AwsCredentials, AwsEnv, CredentialSource, IamError, StsTarget, load_credentials,
    resolve_sts_target, sign_identity_request,
};

/// What a bot proves its AWS identity with for one join: the credentials found (in the
/// order [`load_credentials`] tries) and the STS endpoint [`resolve_sts_target`] names.
///
/// Load it before asking the server for a challenge, so a machine without credentials fails
/// before the server spends a challenge on it. `Debug` never shows the secret access key.
#[derive(Debug, Clone)]
pub struct IamProver {
    creds: AwsCredentials,
    source: CredentialSource,
    target: StsTarget,
}

impl IamProver {
    /// Loads the credentials and resolves the STS endpoint from `env`.
    ///
    /// # Errors
    ///
    /// [`IamError`] when no credentials are found or a source is broken (its message names the
    /// source and what to do).
    pub async fn load(env: &AwsEnv) -> Result<Self, IamError> {
        let (creds, source) = load_credentials(env).await?;
        let target = resolve_sts_target(env);
        tracing::debug!(source = ?source, sts = %target.url, region = %target.region, "signing sts:GetCallerIdentity");
        Ok(Self {
            creds,
            source,
            target,
        })
    }

    /// Where the credentials came from.
    pub fn source(&self) -> &CredentialSource {
        &self.source
    }

    /// The STS endpoint and signing region.
    pub fn target(&self) -> &StsTarget {
        &self.target
    }

    /// The signed request carrying `challenge`, signed now (SigV4 needs the real time, which
    /// STS judges).
    ///
    /// # Errors
    ///
    /// [`IamError`] when the endpoint or region cannot be signed for.
    pub fn sign(&self, challenge: &str) -> Result<Vec<u8>, IamError> {
        sign_identity_request(&self.creds, &self.target, challenge, SystemTime::now())
    }
}
