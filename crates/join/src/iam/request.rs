//! The server's checks on the serialized, signed HTTP request the bot sends.

use subtle::ConstantTimeEq;

use crate::iam::http::sanitize;
use crate::iam::{Challenge, GET_CALLER_IDENTITY_BODY, IamError, StsAllowList, StsEndpoint};

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

/// Headers that must appear at most once: the ones the checks or STS read.
const SINGLE_HEADERS: &[&str] = &[
    "host",
    "content-length",
    crate::iam::CHALLENGE_HEADER,
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "content-type",
];

/// Hop-by-hop headers: they concern the bot's connection to the server, not the server's to
/// STS, so they are not forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

fn malformed(reason: impl Into<String>) -> IamError {
    IamError::MalformedRequest {
        reason: reason.into(),
    }
}

/// RFC 9110 `tchar`: what a method or a header name is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a serialized HTTP/1.1 request (at most [`MAX_REQUEST_BYTES`]).
///
/// Strict on purpose, since the bytes come from the network: request line
/// `METHOD SP target SP HTTP/1.1`, lines end with CRLF (a bare CR or LF is refused), headers
/// `name: value` with no obsolete line folding and no control or non-ASCII characters, the
/// headers [`SignedRequest::header`] relies on at most once, no `Transfer-Encoding`, and a
/// body of exactly `Content-Length` bytes (required when there is a body) with nothing after
/// it. Header names are lowercased; values are trimmed of surrounding spaces and tabs.
pub fn parse_signed_request(raw: &[u8]) -> Result<SignedRequest, IamError> {
    if raw.len() > MAX_REQUEST_BYTES {
        return Err(IamError::RequestTooLarge {
            len: raw.len(),
            max: MAX_REQUEST_BYTES,
        });
    }
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        if raw.windows(2).any(|w| w == b"\n\n") {
            return Err(malformed("lines end with a bare LF; lines end with CRLF"));
        }
        return Err(malformed(
            "no blank line (CRLF CRLF) ends the headers; the request is truncated or not HTTP/1.1",
        ));
    };
    let head = &raw[..head_end];
    let rest = &raw[head_end + 4..];
    // Lines end with CRLF: a bare LF or a bare CR is refused.
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Err(malformed("a line ends with a bare LF; lines end with CRLF"));
        }
        if b == b'\r' && head.get(i + 1) != Some(&b'\n') {
            return Err(malformed("a bare CR in the headers; lines end with CRLF"));
        }
    }
    // So every LF follows a CR; the head's last line had its CRLF cut with the blank line.
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));

    let request_line = lines.next().unwrap_or_default();
    let (method, uri) = parse_request_line(request_line)?;

    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        let (name, value) = parse_header_line(line)?;
        if name == "transfer-encoding" {
            return Err(IamError::TransferEncodingRefused);
        }
        if SINGLE_HEADERS.contains(&name.as_str()) && headers.iter().any(|(n, _)| *n == name) {
            return Err(IamError::DuplicateHeader { name });
        }
        headers.push((name, value));
    }

    let declared = match headers.iter().find(|(n, _)| n == "content-length") {
        None if rest.is_empty() => 0,
        None => {
            return Err(malformed(
                "a body without Content-Length; send Content-Length with the body",
            ));
        }
        Some((_, v)) => {
            if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed(format!(
                    "Content-Length {:?} is not a decimal number of bytes",
                    sanitize(v, 32)
                )));
            }
            v.parse::<usize>()
                .map_err(|_| malformed("Content-Length is out of range"))?
        }
    };
    if rest.len() < declared {
        return Err(IamError::TruncatedBody {
            declared,
            received: rest.len(),
        });
    }
    if rest.len() > declared {
        return Err(IamError::TrailingBytes {
            declared,
            extra: rest.len() - declared,
        });
    }
    Ok(SignedRequest {
        method,
        uri,
        headers,
        body: rest.to_vec(),
    })
}

fn parse_request_line(line: &[u8]) -> Result<(String, String), IamError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "the request line is not METHOD SP target SP HTTP/1.1 (single spaces)",
        ));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(malformed("the method is empty or not a token"));
    }
    if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(malformed(
            "the request target is empty or has control, space or non-ASCII characters",
        ));
    }
    if version != b"HTTP/1.1" {
        return Err(malformed(format!(
            "the version is {:?}, not HTTP/1.1",
            sanitize(&String::from_utf8_lossy(version), 32)
        )));
    }
    // Both are ASCII, checked above.
    Ok((
        String::from_utf8_lossy(method).into_owned(),
        String::from_utf8_lossy(target).into_owned(),
    ))
}

fn parse_header_line(line: &[u8]) -> Result<(String, String), IamError> {
    if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err(malformed(
            "a header line starts with whitespace (obsolete line folding); put each header on one line",
        ));
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(malformed("a header line has no colon"));
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(malformed(format!(
            "header name {:?} is empty or not a token (no spaces before the colon)",
            sanitize(&String::from_utf8_lossy(name), 64)
        )));
    }
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    if let Some(&b) = value
        .iter()
        .find(|&&b| !(b == b'\t' || (0x20..0x7f).contains(&b)))
    {
        return Err(malformed(if b >= 0x80 {
            format!("header {name} has a non-ASCII byte")
        } else {
            format!("header {name} has a control character")
        }));
    }
    let value = String::from_utf8_lossy(value)
        .trim_matches([' ', '\t'])
        .to_string();
    Ok((name, value))
}

/// The parts of a SigV4 `Authorization` header the server checks.
struct Authorization<'a> {
    signed_headers: Vec<&'a str>,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, IamError> {
    let bad = |reason: &str| IamError::MalformedAuthorization {
        reason: reason.to_string(),
    };
    let (algorithm, params) = value.split_once(' ').unwrap_or((value, ""));
    if algorithm != "AWS4-HMAC-SHA256" {
        return Err(IamError::UnsupportedAlgorithm {
            algorithm: sanitize(algorithm, 64),
        });
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in params.split(',') {
        let part = part.trim();
        let Some((key, val)) = part.split_once('=') else {
            return Err(bad("a parameter is not key=value"));
        };
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(bad("an unknown parameter")),
        };
        if slot.replace(val).is_some() {
            return Err(bad("a parameter appears twice"));
        }
    }
    let credential = credential.ok_or_else(|| bad("no Credential"))?;
    let signed = signed.ok_or_else(|| bad("no SignedHeaders"))?;
    let signature = signature.ok_or_else(|| bad("no Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope.iter().any(|s| s.is_empty()) || scope[4] != "aws4_request" {
        return Err(bad(
            "Credential is not access-key/date/region/service/aws4_request",
        ));
    }
    if scope[3] != "sts" {
        return Err(bad("Credential is not scoped to service sts"));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("Signature is not 64 hex digits"));
    }
    let signed_headers: Vec<&str> = signed.split(';').collect();
    if signed_headers.iter().any(|h| h.is_empty()) {
        return Err(bad("SignedHeaders has an empty name"));
    }
    Ok(Authorization { signed_headers })
}

/// Checks a parsed request against the attempt's challenge and the allow-list.
///
/// In order, each failure its own [`IamError`]: target `/`; method `POST`; a `Host` the
/// allow-list names; the challenge header equal to `challenge` (constant time); a SigV4
/// `Authorization` with algorithm `AWS4-HMAC-SHA256` whose `SignedHeaders` cover the
/// challenge and the host; and the exact `GetCallerIdentity` body. The result is aimed at the
/// allow-listed endpoint and carries the headers to forward (hop-by-hop ones dropped).
pub fn check_signed_request(
    req: &SignedRequest,
    challenge: &Challenge,
    allow: &StsAllowList,
) -> Result<VerifiedRequest, IamError> {
    if req.uri != "/" {
        return Err(IamError::WrongUri {
            uri: sanitize(&req.uri, 100),
        });
    }
    if req.method != "POST" {
        return Err(IamError::MethodNotAllowed {
            method: sanitize(&req.method, 32),
        });
    }
    let host = req.header("host").ok_or(IamError::HostMissing)?;
    let Some(endpoint) = allow.find(host) else {
        return Err(IamError::HostNotAllowed {
            host: sanitize(host, 100),
        });
    };
    let presented = req.challenge().ok_or(IamError::ChallengeMissing)?;
    if !bool::from(presented.as_bytes().ct_eq(challenge.as_str().as_bytes())) {
        return Err(IamError::ChallengeWrong);
    }
    let auth = parse_authorization(
        req.header("authorization")
            .ok_or(IamError::AuthorizationMissing)?,
    )?;
    let signed = |name: &str| {
        auth.signed_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
    };
    if !signed(crate::iam::CHALLENGE_HEADER) {
        return Err(IamError::ChallengeUnsigned);
    }
    if !signed("host") {
        return Err(IamError::HostUnsigned);
    }
    if req.body != GET_CALLER_IDENTITY_BODY.as_bytes() {
        let body = String::from_utf8_lossy(&req.body);
        let action = body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "Action")
            .map(|(_, v)| v);
        return Err(match action {
            Some(a) if a != "GetCallerIdentity" => IamError::WrongAction {
                action: sanitize(a, 64),
            },
            _ => IamError::BodyAltered,
        });
    }
    let headers = req
        .headers
        .iter()
        .filter(|(n, _)| !HOP_BY_HOP.iter().any(|h| n.eq_ignore_ascii_case(h)))
        .cloned()
        .collect();
    tracing::debug!(endpoint = %endpoint, "IAM join: signed request passed the checks");
    Ok(VerifiedRequest {
        endpoint: endpoint.clone(),
        headers,
        body: req.body.clone(),
    })
}
