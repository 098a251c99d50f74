//! Why an IAM join was refused or could not be attempted.

use std::time::Duration;

use thiserror::Error;

/// Why an IAM join failed. Every refusal names its cause; messages say what to do.
///
/// [`IamError::is_retryable`] tells the transient failures (STS slow or unreachable, the
/// server busy) from refusals that fail the same way when tried again.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IamError {
    // --- challenges -------------------------------------------------------------------------
    /// The signed request carries no `X-Teleport-Challenge` header.
    #[error(
        "the signed request has no X-Teleport-Challenge header; sign the request with the challenge the server sent (a tbot of the same version does this)"
    )]
    ChallengeMissing,
    /// This attempt's challenge was already answered once.
    #[error(
        "the challenge was reused: each challenge admits one attempt and this one was already answered; start a new join to get a fresh challenge"
    )]
    ChallengeReused,
    /// The request carries the challenge of another attempt.
    #[error(
        "the challenge was reused: the request carries the challenge of another join attempt, not the one the server sent for this attempt; sign each attempt with its own challenge"
    )]
    ChallengeOfAnotherAttempt,
    /// The request carries a challenge the server never issued (or not this attempt's).
    #[error(
        "wrong challenge: the request's X-Teleport-Challenge is not the challenge the server sent for this attempt; sign the request with the challenge of this attempt"
    )]
    ChallengeWrong,
    /// The challenge was answered too late.
    #[error(
        "the challenge expired: it was answered {age_secs}s after it was issued, the limit is {ttl_secs}s; retry the join (check the bot's and server's clocks and the network if this repeats)"
    )]
    ChallengeExpired {
        /// Seconds between issue and answer.
        age_secs: i64,
        /// The time to live of a challenge, in seconds.
        ttl_secs: u64,
    },
    /// The server has no record of this attempt's challenge (long expired and forgotten).
    #[error(
        "the server has no record of this attempt's challenge (it expired long ago or the server restarted); retry the join"
    )]
    ChallengeUnknown,
    /// Too many challenges are outstanding.
    #[error(
        "the server has {capacity} challenges outstanding and cannot issue more right now; retry the join in a minute"
    )]
    ChallengeLedgerFull {
        /// The ledger's capacity.
        capacity: usize,
    },
    /// The challenge header is present but not covered by the signature.
    #[error(
        "the challenge is not signed: x-teleport-challenge is missing from SignedHeaders, so the request could be replayed; sign every header, the challenge included"
    )]
    ChallengeUnsigned,

    // --- endpoints --------------------------------------------------------------------------
    /// A configured STS endpoint is not a plain `http(s)://host[:port]` URL.
    #[error(
        "invalid STS endpoint {url:?}: {reason}; write it as https://host or https://host:port (no path, query or user)"
    )]
    InvalidStsEndpoint {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    // --- the serialized request -------------------------------------------------------------
    /// The serialized request is larger than [`MAX_REQUEST_BYTES`](crate::iam::MAX_REQUEST_BYTES).
    #[error(
        "the signed request is {len} bytes, more than the {max} the server accepts; send only the signed sts:GetCallerIdentity request"
    )]
    RequestTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The serialized request is not a well-formed HTTP/1.1 request.
    #[error("malformed signed request: {reason}; send the request exactly as tbot serializes it")]
    MalformedRequest {
        /// What is malformed.
        reason: String,
    },
    /// A header that must appear once appears more than once.
    #[error("malformed signed request: header {name} appears more than once; send it once")]
    DuplicateHeader {
        /// The header's name (lowercase).
        name: String,
    },
    /// The request uses `Transfer-Encoding`.
    #[error(
        "malformed signed request: Transfer-Encoding is not accepted; send the body with Content-Length"
    )]
    TransferEncodingRefused,
    /// The body is shorter than its `Content-Length`.
    #[error(
        "malformed signed request: the body is truncated, Content-Length says {declared} bytes but {received} arrived; send the whole request"
    )]
    TruncatedBody {
        /// What `Content-Length` says.
        declared: usize,
        /// What arrived.
        received: usize,
    },
    /// Bytes follow the body.
    #[error(
        "malformed signed request: {extra} bytes follow the {declared}-byte body; send one request and nothing after it"
    )]
    TrailingBytes {
        /// What `Content-Length` says.
        declared: usize,
        /// How many bytes follow.
        extra: usize,
    },

    // --- the checks on the request ----------------------------------------------------------
    /// The request target is not `/`.
    #[error("the signed request is for {uri:?}; only POST / (sts:GetCallerIdentity) is accepted")]
    WrongUri {
        /// The target as sent (sanitized, truncated).
        uri: String,
    },
    /// The method is not `POST`.
    #[error(
        "the signed request uses method {method}; only POST of sts:GetCallerIdentity is accepted"
    )]
    MethodNotAllowed {
        /// The method as sent (sanitized, truncated).
        method: String,
    },
    /// The request has no `Host` header.
    #[error("the signed request has no Host header; sign it for an STS endpoint")]
    HostMissing,
    /// The request names a host that is not an allowed STS endpoint.
    #[error(
        "the signed request is for host {host:?}, which is not an allowed STS endpoint; the server's allow-list decides (the AWS STS endpoints plus the auth server's extra_sts_endpoints setting, --extra-sts-endpoint): sign for an AWS STS endpoint or have the administrator add this one"
    )]
    HostNotAllowed {
        /// The host as sent (sanitized, truncated).
        host: String,
    },
    /// The request is not signed for its host.
    #[error("host is missing from SignedHeaders; sign every header, Host included")]
    HostUnsigned,
    /// The request has no `Authorization` header.
    #[error("the signed request has no Authorization header; sign it with SigV4")]
    AuthorizationMissing,
    /// The `Authorization` header is not a SigV4 header.
    #[error(
        "malformed Authorization header: {reason}; sign with SigV4 (AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...)"
    )]
    MalformedAuthorization {
        /// What is malformed (never the header's value).
        reason: String,
    },
    /// The signing algorithm is not `AWS4-HMAC-SHA256`.
    #[error(
        "the request is signed with algorithm {algorithm:?}; only AWS4-HMAC-SHA256 is accepted"
    )]
    UnsupportedAlgorithm {
        /// The algorithm named (sanitized, truncated).
        algorithm: String,
    },
    /// The body asks for another STS action.
    #[error("the signed request asks for action {action:?}; only GetCallerIdentity is accepted")]
    WrongAction {
        /// The action named (sanitized, truncated).
        action: String,
    },
    /// The body is not exactly `Action=GetCallerIdentity&Version=2011-06-15`.
    #[error(
        "the signed request's body was altered: it must be exactly Action=GetCallerIdentity&Version=2011-06-15"
    )]
    BodyAltered,

    // --- talking to STS ---------------------------------------------------------------------
    /// STS did not answer in time.
    #[error(
        "STS did not answer within {timeout:?} ({endpoint}); retry the join, and check the auth server's network path to STS if this repeats"
    )]
    StsTimeout {
        /// The endpoint asked.
        endpoint: String,
        /// The time it was given.
        timeout: Duration,
    },
    /// STS could not be reached.
    #[error(
        "cannot reach STS at {endpoint}: {reason}; check the auth server's network and DNS (and any proxy) toward that endpoint"
    )]
    StsUnreachable {
        /// The endpoint asked.
        endpoint: String,
        /// Why (connection refused, DNS, TLS).
        reason: String,
    },
    /// STS answered a body larger than [`MAX_STS_BODY_BYTES`](crate::iam::MAX_STS_BODY_BYTES).
    #[error(
        "STS answered more than {limit} bytes ({endpoint}); the endpoint is not behaving like STS, check extra_sts_endpoints"
    )]
    StsBodyTooLarge {
        /// The endpoint asked.
        endpoint: String,
        /// The limit.
        limit: usize,
    },
    /// STS broke HTTP (closed early, malformed response).
    #[error("STS at {endpoint} broke the HTTP exchange: {reason}; retry the join")]
    StsProtocol {
        /// The endpoint asked.
        endpoint: String,
        /// What happened.
        reason: String,
    },
    /// STS refused the request (non-2xx).
    #[error(
        "STS refused the request with HTTP {status}{}: {}",
        aws_detail(code.as_deref(), message.as_deref()),
        refused_advice(*status)
    )]
    StsRefused {
        /// The endpoint asked.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The AWS error code (`InvalidClientTokenId`, `SignatureDoesNotMatch`...), if given.
        code: Option<String>,
        /// The AWS error message, sanitized and truncated, if given.
        message: Option<String>,
    },
    /// The STS answer is not a `GetCallerIdentityResponse`.
    #[error("malformed STS response: {reason}; the endpoint is not behaving like STS")]
    MalformedStsResponse {
        /// What is wrong with it.
        reason: String,
    },

    // --- allow rules ------------------------------------------------------------------------
    /// No allow rule of the token matches the caller.
    #[error(
        "instance did not match any allow rules of token {token:?}: AWS identity {arn} in account {account}; add an allow rule (aws_account or aws_arn) matching it to the token"
    )]
    NoMatchingRule {
        /// The caller's ARN.
        arn: String,
        /// The caller's account.
        account: String,
        /// The token's name.
        token: String,
    },

    // --- the bot: credentials and signing ---------------------------------------------------
    /// One of the pair of environment variables is set without the other.
    #[error(
        "{set} is set but {missing} is not; set both (and AWS_SESSION_TOKEN for temporary credentials) or neither"
    )]
    EnvCredentialsIncomplete {
        /// The variable that is set.
        set: &'static str,
        /// The variable that is missing.
        missing: &'static str,
    },
    /// `AWS_PROFILE` names a profile found in neither shared file.
    #[error(
        "AWS_PROFILE is {profile:?} but no such profile is in {searched}; fix AWS_PROFILE or add the profile"
    )]
    ProfileNotFound {
        /// The profile asked for.
        profile: String,
        /// The files searched and what became of each.
        searched: String,
    },
    /// The profile gets its credentials in a way not supported yet.
    #[error(
        "profile {profile:?} in {file} uses {keys}, which is not supported yet; export AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (for example from `aws configure export-credentials --profile {profile} --format env`) instead"
    )]
    ProfileUnsupported {
        /// The profile.
        profile: String,
        /// The file it is in.
        file: String,
        /// The keys it uses (`role_arn`, `credential_process`, `sso_*`...).
        keys: String,
    },
    /// The profile has one of the key pair without the other.
    #[error("profile {profile:?} in {file} has {present} but no {missing}; add it")]
    ProfileIncomplete {
        /// The profile.
        profile: String,
        /// The file it is in.
        file: String,
        /// The key present.
        present: &'static str,
        /// The key missing.
        missing: &'static str,
    },
    /// The container credentials endpoint is configured but gave no credentials.
    #[error(
        "container credentials from {url} failed: {reason}; check the task or pod role and the AWS_CONTAINER_* variables"
    )]
    ContainerCredentials {
        /// The URL asked (or configured).
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// No source of credentials gave any.
    #[error(
        "no AWS credentials found; tried: {}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or AWS_PROFILE to a profile with keys, or run tbot on EC2, ECS or EKS with an IAM role attached",
        tried.join("; ")
    )]
    NoCredentials {
        /// Every place tried, and why each gave nothing.
        tried: Vec<String>,
    },
    /// The STS endpoint the bot would sign for is not usable.
    #[error(
        "cannot sign for STS endpoint {url:?}: {reason}; fix AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL or AWS_REGION"
    )]
    InvalidStsTarget {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// SigV4 signing failed (credentials or challenge unusable in a header).
    #[error("cannot sign the sts:GetCallerIdentity request: {reason}")]
    Signing {
        /// Why (never a secret).
        reason: String,
    },
}

fn aws_detail(code: Option<&str>, message: Option<&str>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" ({c}: {m})"),
        (Some(c), None) => format!(" ({c})"),
        (None, Some(m)) => format!(" ({m})"),
        (None, None) => String::new(),
    }
}

fn refused_advice(status: u16) -> &'static str {
    if status >= 500 || status == 429 {
        "STS is failing or throttling; retry the join later"
    } else {
        "the bot's AWS credentials or signature were not accepted; check the credentials tbot uses and the bot's clock"
    }
}

impl IamError {
    /// Whether trying the same thing again later may succeed: STS slow, unreachable or
    /// answering 5xx/throttling, or the server's challenge ledger full. Everything else is a
    /// refusal that repeats until something is changed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::StsTimeout { .. }
            | Self::StsUnreachable { .. }
            | Self::StsProtocol { .. }
            | Self::ChallengeLedgerFull { .. } => true,
            Self::StsRefused { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || code
                        .as_deref()
                        .is_some_and(|c| c.contains("Throttl") || c == "RequestLimitExceeded")
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable() {
        assert!(
            IamError::StsTimeout {
                endpoint: "x".into(),
                timeout: Duration::from_secs(1)
            }
            .is_retryable()
        );
        assert!(IamError::ChallengeLedgerFull { capacity: 1 }.is_retryable());
        let refused = |status, code: Option<&str>| IamError::StsRefused {
            endpoint: "x".into(),
            status,
            code: code.map(Into::into),
            message: None,
        };
        assert!(refused(503, None).is_retryable());
        assert!(refused(400, Some("Throttling")).is_retryable());
        assert!(!refused(403, Some("InvalidClientTokenId")).is_retryable());
        assert!(!IamError::ChallengeWrong.is_retryable());
    }

    #[test]
    fn messages_are_lower_case_without_trailing_period() {
        let samples = [
            IamError::ChallengeMissing.to_string(),
            IamError::BodyAltered.to_string(),
            IamError::NoCredentials {
                tried: vec!["a".into(), "b".into()],
            }
            .to_string(),
            IamError::StsRefused {
                endpoint: "x".into(),
                status: 403,
                code: Some("C".into()),
                message: Some("M".into()),
            }
            .to_string(),
        ];
        for m in samples {
            assert!(!m.ends_with('.'), "{m}");
            // Lower-case, or an acronym such as STS or AWS_PROFILE.
            let first = m.split(' ').next().unwrap_or_default();
            assert!(
                first.chars().all(|c| !c.is_uppercase())
                    || first.chars().all(|c| !c.is_lowercase()),
                "{m}"
            );
        }
    }
}
