//! Building, signing and serializing the bot's `sts:GetCallerIdentity` request.

use std::time::SystemTime;

use crate::iam::{AwsCredentials, AwsEnv, Challenge, IamError};

/// The STS endpoint the bot signs for and the region it signs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsTarget {
    /// `https://sts.us-west-2.amazonaws.com` or an override such as `http://127.0.0.1:5000`.
    pub url: String,
    /// The signing region.
    pub region: String,
}

/// The endpoint the AWS conventions name: `AWS_ENDPOINT_URL_STS`, then `AWS_ENDPOINT_URL`,
/// else the regional endpoint of the known region (FIPS with `AWS_USE_FIPS_ENDPOINT=true`),
/// else the global one.
pub fn resolve_sts_target(_env: &AwsEnv) -> StsTarget {
    StsTarget {
        url: "https://sts.amazonaws.com".into(),
        region: "us-east-1".into(),
    }
}

/// The serialized HTTP/1.1 `POST /` request with the challenge header, signed with SigV4 at
/// `time`.
pub fn sign_identity_request(
    _creds: &AwsCredentials,
    _target: &StsTarget,
    _challenge: &str,
    _time: SystemTime,
) -> Result<Vec<u8>, IamError> {
    let _ = Challenge::as_str;
    Err(IamError::Unimplemented("sign_identity_request"))
}
