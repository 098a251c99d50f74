//! The `iam` join method: the bot proves which AWS identity it runs as with a signed
//! `sts:GetCallerIdentity` request that the auth server forwards to STS itself.
//!
//! The server's half, in the order the auth server uses it:
//! 1. [`ChallengeLedger::issue`] a fresh [`Challenge`] per attempt (32 random bytes, base64
//!    without padding, one minute, one attempt).
//! 2. [`parse_signed_request`] reads the serialized HTTP/1.1 request the bot sent (bounded);
//!    [`ChallengeLedger::redeem`] spends the challenge and compares the one the request carries.
//! 3. [`check_signed_request`] checks URI, method, host (against the [`StsAllowList`], never a
//!    host the client chose), that the challenge header is signed, the algorithm and the exact
//!    body, and gives a [`VerifiedRequest`] aimed at the allow-listed endpoint.
//! 4. [`StsClient::get_caller_identity`] forwards it with a timeout and a bounded body and parses
//!    the answer ([`parse_caller_identity`], JSON or XML).
//! 5. [`match_rules`] matches the [`CallerIdentity`] against the token's allow rules (first
//!    match wins, anchored glob); [`check_token`] checks the token itself.
//!
//! The bot's half: [`load_credentials`] finds AWS credentials in the usual places and order
//! (environment, shared credentials/config profile, container credentials, EC2 instance
//! metadata with IMDSv2), [`resolve_sts_target`] picks the endpoint the AWS conventions name,
//! and [`sign_identity_request`] builds, signs (SigV4, no AWS SDK) and serializes the request.

mod challenge;
mod credentials;
mod endpoints;
mod error;
mod request;
mod rules;
mod sign;
mod sts;

pub use challenge::{CHALLENGE_TTL, Challenge, ChallengeLedger};
pub use credentials::{AwsCredentials, AwsEnv, CredentialSource, load_credentials};
pub use endpoints::{Scheme, StsAllowList, StsEndpoint};
pub use error::IamError;
pub use request::{
    MAX_REQUEST_BYTES, SignedRequest, VerifiedRequest, check_signed_request, parse_signed_request,
};
pub use rules::{check_token, glob_match, match_rules};
pub use sign::{StsTarget, resolve_sts_target, sign_identity_request};
pub use sts::{CallerIdentity, MAX_STS_BODY_BYTES, StsClient, parse_caller_identity};

/// The header that carries the server's challenge in the signed request.
pub const CHALLENGE_HEADER: &str = "x-teleport-challenge";
/// The only body the server forwards.
pub const GET_CALLER_IDENTITY_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
