//! The STS endpoints the server forwards to: the real AWS list plus configured extras.

use crate::iam::IamError;
use crate::iam::http::Url;

/// The commercial AWS regions with a regional STS endpoint `sts.<region>.amazonaws.com`
/// (botocore 1.44 `endpoints.json`, partition `aws`).
const COMMERCIAL_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
];

/// Regions with a FIPS STS endpoint `sts-fips.<region>.amazonaws.com`. (GovCloud's regional
/// endpoints are FIPS endpoints themselves.)
const FIPS_REGIONS: &[&str] = &["us-east-1", "us-east-2", "us-west-1", "us-west-2"];

/// China: `sts.<region>.amazonaws.com.cn`.
const CHINA_REGIONS: &[&str] = &["cn-north-1", "cn-northwest-1"];

/// GovCloud: `sts.<region>.amazonaws.com`.
const GOVCLOUD_REGIONS: &[&str] = &["us-gov-east-1", "us-gov-west-1"];

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
    /// Parses `https://sts.example.com` or `http://127.0.0.1:5000` (no path, query or user;
    /// one trailing `/` is allowed). The host is lowercased and a default port dropped, so
    /// the result compares equal to the `Host` header a client sends.
    pub fn parse(url: &str) -> Result<Self, IamError> {
        let invalid = |reason: String| IamError::InvalidStsEndpoint {
            url: crate::iam::http::sanitize(url, 200),
            reason,
        };
        let parsed = Url::parse(url).map_err(invalid)?;
        if parsed.path != "/" {
            return Err(invalid("it has a path or query".into()));
        }
        Ok(Self {
            scheme: parsed.scheme,
            host: parsed.authority(),
        })
    }

    /// An HTTPS endpoint at `host` (no port).
    fn https(host: String) -> Self {
        Self {
            scheme: Scheme::Https,
            host,
        }
    }

    /// The URL the server sends to (for connecting and for messages).
    pub(crate) fn url(&self) -> Result<Url, String> {
        Url::parse(&self.to_string())
    }

    /// Whether the host is `localhost` or a loopback address (`127.0.0.1`, `[::1]`), with or
    /// without a port: where plain HTTP does not cross a network.
    pub fn is_loopback(&self) -> bool {
        self.url().is_ok_and(|u| u.is_loopback())
    }
}

impl std::fmt::Display for StsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}", self.host)
    }
}

impl std::str::FromStr for StsEndpoint {
    type Err = IamError;
    fn from_str(s: &str) -> Result<Self, IamError> {
        Self::parse(s)
    }
}

/// The endpoints a signed request may name.
#[derive(Debug, Clone, Default)]
pub struct StsAllowList {
    endpoints: Vec<StsEndpoint>,
}

impl StsAllowList {
    /// The real AWS list: global, regional and FIPS STS endpoints, all HTTPS: the global
    /// `sts.amazonaws.com`, `sts.<region>.amazonaws.com` for every commercial and GovCloud
    /// region, `sts.<region>.amazonaws.com.cn` for China, and `sts-fips.<region>.amazonaws.com`
    /// where AWS has one.
    pub fn aws_default() -> Self {
        let mut endpoints = vec![StsEndpoint::https("sts.amazonaws.com".into())];
        for r in COMMERCIAL_REGIONS.iter().chain(GOVCLOUD_REGIONS) {
            endpoints.push(StsEndpoint::https(format!("sts.{r}.amazonaws.com")));
        }
        for r in FIPS_REGIONS {
            endpoints.push(StsEndpoint::https(format!("sts-fips.{r}.amazonaws.com")));
        }
        for r in CHINA_REGIONS {
            endpoints.push(StsEndpoint::https(format!("sts.{r}.amazonaws.com.cn")));
        }
        Self { endpoints }
    }

    /// Every allowed endpoint, the AWS ones first.
    pub fn endpoints(&self) -> &[StsEndpoint] {
        &self.endpoints
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn parse_good() {
        let e = StsEndpoint::parse("https://STS.Example.com/").unwrap();
        assert_eq!(e, StsEndpoint::https("sts.example.com".into()));
        assert_eq!(e.to_string(), "https://sts.example.com");
        let e = StsEndpoint::parse("http://127.0.0.1:5000").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str()),
            (Scheme::Http, "127.0.0.1:5000")
        );
        assert_eq!(
            StsEndpoint::parse("https://sts.example.com:443")
                .unwrap()
                .host,
            "sts.example.com"
        );
        assert_eq!(
            StsEndpoint::parse("http://[::1]:5000").unwrap().host,
            "[::1]:5000"
        );
    }

    #[test]
    fn loopback_endpoints() {
        for url in [
            "http://127.0.0.1:5000",
            "http://localhost",
            "http://[::1]",
            "http://[::1]:5000",
        ] {
            assert!(StsEndpoint::parse(url).unwrap().is_loopback(), "{url}");
        }
        for url in ["http://10.0.0.1:5000", "https://sts.amazonaws.com"] {
            assert!(!StsEndpoint::parse(url).unwrap().is_loopback(), "{url}");
        }
    }

    #[test]
    fn parse_bad_names_the_url() {
        for bad in [
            "sts.example.com",
            "ftp://sts.example.com",
            "https://sts.example.com/path",
            "https://sts.example.com//",
            "https://sts.example.com?x=1",
            "https://sts.example.com/?x=1",
            "https://user@sts.example.com",
            "https://sts.example.com#f",
            "https://:443",
            "https://sts.example.com:0",
            "",
        ] {
            let e = StsEndpoint::parse(bad).unwrap_err();
            assert!(matches!(e, IamError::InvalidStsEndpoint { .. }), "{bad}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn aws_default_list() {
        let l = StsAllowList::aws_default();
        for h in [
            "sts.amazonaws.com",
            "sts.us-east-1.amazonaws.com",
            "sts.eu-west-3.amazonaws.com",
            "sts.ap-southeast-7.amazonaws.com",
            "sts.mx-central-1.amazonaws.com",
            "sts.cn-north-1.amazonaws.com.cn",
            "sts.cn-northwest-1.amazonaws.com.cn",
            "sts.us-gov-west-1.amazonaws.com",
            "sts-fips.us-west-2.amazonaws.com",
            "STS.AMAZONAWS.COM",
        ] {
            let e = l.find(h).unwrap_or_else(|| panic!("{h}"));
            assert_eq!(e.scheme, Scheme::Https);
        }
        for h in [
            "sts.amazonaws.com:443",
            "sts.evil.com",
            "sts.us-east-1.amazonaws.com.evil.com",
            "sts-fips.eu-west-1.amazonaws.com",
            "127.0.0.1:5000",
        ] {
            assert!(l.find(h).is_none(), "{h}");
        }
        assert_eq!(l.endpoints().len(), 1 + 34 + 2 + 4 + 2);
        let l = l.with_extra([StsEndpoint::parse("http://127.0.0.1:5000").unwrap()]);
        assert_eq!(l.find("127.0.0.1:5000").unwrap().scheme, Scheme::Http);
    }
}
