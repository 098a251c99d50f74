//! Forwarding the verified request to STS and reading its answer.

use std::time::Duration;

use crate::iam::{IamError, VerifiedRequest};

/// The largest STS response body the server reads.
pub const MAX_STS_BODY_BYTES: usize = 64 * 1024;

/// Who STS says signed the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The 12-digit account id.
    pub account: String,
    /// The caller's ARN (`arn:aws:sts::111111111111:assumed-role/role/session`).
    pub arn: String,
    /// The unique id of the caller.
    pub user_id: String,
}

/// Sends verified requests to STS.
#[derive(Debug, Clone)]
pub struct StsClient {
    timeout: Duration,
}

impl StsClient {
    /// A client that gives STS `timeout` for the whole exchange.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// Forwards `req` and parses the caller identity STS answers.
    pub async fn get_caller_identity(
        &self,
        _req: &VerifiedRequest,
    ) -> Result<CallerIdentity, IamError> {
        let _ = self.timeout;
        Err(IamError::Unimplemented("StsClient::get_caller_identity"))
    }
}

/// Parses a `GetCallerIdentityResponse`, JSON or XML.
pub fn parse_caller_identity(_body: &[u8]) -> Result<CallerIdentity, IamError> {
    Err(IamError::Unimplemented("parse_caller_identity"))
}
