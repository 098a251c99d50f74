//! The server's checks on the serialized, signed HTTP request the bot sends.

use crate::iam::{Challenge, IamError, StsAllowList, StsEndpoint};

/// The largest serialized request the server reads.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// A serialized HTTP/1.1 request, parsed but not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The method, as sent.
    pub method: String,
    /// The request target, as sent.
    pub uri: String,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl SignedRequest {
    /// The value of header `name` (case-insensitive), if present once.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The challenge the request carries, if any.
    pub fn challenge(&self) -> Option<&str> {
        self.header(crate::iam::CHALLENGE_HEADER)
    }
}

/// A request that passed every check, aimed at an allow-listed endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRequest {
    /// Where to send it (from the allow-list, never from the client).
    pub endpoint: StsEndpoint,
    /// The headers to forward, as signed.
    pub headers: Vec<(String, String)>,
    /// The body (always `Action=GetCallerIdentity&Version=2011-06-15`).
    pub body: Vec<u8>,
}

/// Parses a serialized HTTP/1.1 request (at most [`MAX_REQUEST_BYTES`]).
pub fn parse_signed_request(_raw: &[u8]) -> Result<SignedRequest, IamError> {
    Err(IamError::Unimplemented("parse_signed_request"))
}

/// Checks a parsed request against the attempt's challenge and the allow-list.
pub fn check_signed_request(
    _req: &SignedRequest,
    _challenge: &Challenge,
    _allow: &StsAllowList,
) -> Result<VerifiedRequest, IamError> {
    Err(IamError::Unimplemented("check_signed_request"))
}
