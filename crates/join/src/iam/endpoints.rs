//! The STS endpoints the server forwards to: the real AWS list plus configured extras.

use crate::iam::IamError;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP (private endpoints and tests on loopback only when configured).
    Http,
    /// HTTPS, verified against the web PKI roots.
    Https,
}

/// One STS endpoint: scheme and `host[:port]` (lowercase).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StsEndpoint {
    /// The scheme the server uses to reach it.
    pub scheme: Scheme,
    /// `host` or `host:port`, lowercase, as it appears in the request's `Host` header.
    pub host: String,
}

impl StsEndpoint {
    /// Parses `https://sts.example.com` or `http://127.0.0.1:5000` (no path, query or user).
    pub fn parse(_url: &str) -> Result<Self, IamError> {
        Err(IamError::Unimplemented("StsEndpoint::parse"))
    }
}

/// The endpoints a signed request may name.
#[derive(Debug, Clone, Default)]
pub struct StsAllowList {
    endpoints: Vec<StsEndpoint>,
}

impl StsAllowList {
    /// The real AWS list: global, regional and FIPS STS endpoints, all HTTPS.
    pub fn aws_default() -> Self {
        Self::default()
    }

    /// Adds endpoints (from configuration).
    pub fn with_extra(mut self, extra: impl IntoIterator<Item = StsEndpoint>) -> Self {
        self.endpoints.extend(extra);
        self
    }

    /// The endpoint whose host is `host` (case-insensitive), if allowed.
    pub fn find(&self, host: &str) -> Option<&StsEndpoint> {
        self.endpoints
            .iter()
            .find(|e| e.host.eq_ignore_ascii_case(host))
    }
}
