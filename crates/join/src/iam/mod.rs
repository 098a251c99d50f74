//! The `iam` join method: the bot proves which AWS identity it runs as with a signed
//! `sts:GetCallerIdentity` request that the auth server forwards to STS itself.
//!
//! The server's half, in the order the auth server uses it:
//! 1. [`check_token`] checks the token itself (unexpired, method `iam`, a bot token).
//! 2. [`ChallengeLedger::issue`] a fresh [`Challenge`] per attempt (32 random bytes, base64
//!    without padding, one minute, one attempt; the ledger is bounded and refuses with a
//!    retryable error when full).
//! 3. [`parse_signed_request`] reads the serialized HTTP/1.1 request the bot sent (bounded,
//!    strict); [`ChallengeLedger::redeem`] spends the challenge and compares the one the
//!    request carries (missing, reused, expired, another attempt's, wrong: each its own error).
//! 4. [`check_signed_request`] checks URI, method, host (against the [`StsAllowList`], never a
//!    host the client chose), that the challenge header is signed, the algorithm and the exact
//!    body, and gives a [`VerifiedRequest`] aimed at the allow-listed endpoint.
//! 5. [`StsClient::get_caller_identity`] forwards it with a timeout and a bounded body and parses
//!    the answer ([`parse_caller_identity`], JSON or XML).
//! 6. [`match_rules`] matches the [`CallerIdentity`] against the token's allow rules (first
//!    match wins, anchored glob, see [`glob_match`]).
//!
//! Every failure is an [`IamError`] naming its cause; [`IamError::is_retryable`] tells the
//! transient ones (STS slow or unreachable, ledger full) from refusals.
//!
//! The bot's half: [`load_credentials`] finds AWS credentials in the usual places and order
//! (environment, shared credentials/config profile, container credentials, EC2 instance
//! metadata with IMDSv2), [`resolve_sts_target`] picks the endpoint the AWS conventions name,
//! and [`sign_identity_request`] builds, signs (SigV4, no AWS SDK) and serializes the request.
//! [`IamProver`] is the three in one, what a bot calls for a join.
//!
//! ```
//! use std::time::SystemTime;
//! use machine_id_join::iam::*;
//!
//! // Server: a challenge for this attempt.
//! let now = time::OffsetDateTime::now_utc();
//! let ledger = ChallengeLedger::new();
//! let challenge = ledger.issue(now).unwrap();
//!
//! // Bot: sign with the challenge.
//! let creds = AwsCredentials {
//!     access_key_id: "AKIDEXAMPLE".into(),
//!     secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
//!     session_token: None,
//! };
//! let target = StsTarget { url: "https://sts.us-west-2.amazonaws.com".into(), region: "us-west-2".into() };
//! let raw = sign_identity_request(&creds, &target, challenge.as_str(), SystemTime::now()).unwrap();
//!
//! // Server: parse, spend the challenge, check; then StsClient::get_caller_identity(&verified).
//! let req = parse_signed_request(&raw).unwrap();
//! ledger.redeem(&challenge, req.challenge(), now).unwrap();
//! let verified = check_signed_request(&req, &challenge, &StsAllowList::aws_default()).unwrap();
//! assert_eq!(verified.endpoint.host, "sts.us-west-2.amazonaws.com");
//! ```
//!
//! The HTTP plumbing (one connection per request, timeouts, bounded bodies, rustls with the
//! ring provider and the web PKI roots) is shared by the STS client and the credential chain.

mod challenge;
mod credentials;
mod endpoints;
mod error;
mod http;
mod prover;
mod request;
mod rules;
mod sign;
mod sts;

pub use challenge::{CHALLENGE_TTL, Challenge, ChallengeLedger, DEFAULT_LEDGER_CAPACITY};
pub use credentials::{AwsCredentials, AwsEnv, CredentialSource, load_credentials};
pub use endpoints::{Scheme, StsAllowList, StsEndpoint};
pub use error::IamError;
pub use prover::IamProver;
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
