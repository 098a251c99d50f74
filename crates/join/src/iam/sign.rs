//! Building, signing and serializing the bot's `sts:GetCallerIdentity` request.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use crate::iam::http::{Url, sanitize};
use crate::iam::{
    AwsCredentials, AwsEnv, CHALLENGE_HEADER, GET_CALLER_IDENTITY_BODY, IamError, Scheme,
};

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
///
/// The region is [`AwsEnv::region`] (`AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's
/// `region`); it is also the signing region, `us-east-1` when unknown. China regions
/// (`cn-*`) use `amazonaws.com.cn`; GovCloud's regional endpoints are already FIPS ones; with
/// FIPS and no region the endpoint is `sts-fips.us-east-1.amazonaws.com`.
pub fn resolve_sts_target(env: &AwsEnv) -> StsTarget {
    let region = env.region();
    let fips = env
        .var("AWS_USE_FIPS_ENDPOINT")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let overridden = env
        .var("AWS_ENDPOINT_URL_STS")
        .or_else(|| env.var("AWS_ENDPOINT_URL"))
        .map(|u| u.trim().trim_end_matches('/').to_string());
    let url = match (overridden, region.as_deref()) {
        (Some(url), _) => url,
        (None, Some(r)) if r.starts_with("cn-") => format!("https://sts.{r}.amazonaws.com.cn"),
        (None, Some(r)) if fips && !r.starts_with("us-gov-") => {
            format!("https://sts-fips.{r}.amazonaws.com")
        }
        (None, Some(r)) => format!("https://sts.{r}.amazonaws.com"),
        (None, None) if fips => "https://sts-fips.us-east-1.amazonaws.com".into(),
        (None, None) => "https://sts.amazonaws.com".into(),
    };
    let target = StsTarget {
        url,
        region: region.unwrap_or_else(|| "us-east-1".into()),
    };
    tracing::debug!(url = %target.url, region = %target.region, "STS target");
    target
}

/// The serialized HTTP/1.1 `POST /` request with the challenge header, signed with SigV4 at
/// `time`.
///
/// Headers: `Host` (with the port only when it is not the scheme's default),
/// `Content-Type: application/x-www-form-urlencoded; charset=utf-8`,
/// `Accept: application/json`, `X-Teleport-Challenge`, and the signer's `X-Amz-Date`,
/// `X-Amz-Security-Token` (temporary credentials) and `Authorization`; every one of them but
/// `Authorization` is signed. `Content-Length` is added when serializing. The body is
/// [`GET_CALLER_IDENTITY_BODY`].
pub fn sign_identity_request(
    creds: &AwsCredentials,
    target: &StsTarget,
    challenge: &str,
    time: SystemTime,
) -> Result<Vec<u8>, IamError> {
    let invalid = |reason: String| IamError::InvalidStsTarget {
        url: sanitize(&target.url, 200),
        reason,
    };
    let url = Url::parse(&target.url).map_err(invalid)?;
    if url.path != "/" {
        return Err(invalid(
            "it has a path or query; give only scheme, host and port".into(),
        ));
    }
    if target.region.is_empty()
        || !target
            .region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(invalid(format!(
            "signing region {:?} is not a region name",
            sanitize(&target.region, 64)
        )));
    }
    if challenge.is_empty() || !challenge.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IamError::Signing {
            reason: "the challenge is empty or not printable ASCII".into(),
        });
    }
    let scheme = match url.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    let host = url.authority();
    let uri = format!("{scheme}://{host}/");

    let mut request = http::Request::builder()
        .method("POST")
        .uri(uri.as_str())
        .header("host", host.as_str())
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .header("accept", "application/json")
        .header(CHALLENGE_HEADER, challenge)
        .body(GET_CALLER_IDENTITY_BODY)
        .map_err(|e| IamError::Signing {
            reason: format!("cannot build the request: {e}"),
        })?;

    let identity: Identity = Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.clone(),
        None,
        "machine-id",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&target.region)
        .name("sts")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| IamError::Signing {
            reason: format!("bad signing parameters: {e}"),
        })?
        .into();
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .map(|(n, v)| Ok((n.as_str(), v.to_str()?)))
        .collect::<Result<_, http::header::ToStrError>>()
        .map_err(|e| IamError::Signing {
            reason: format!("a header is not ASCII: {e}"),
        })?;
    let signable = SignableRequest::new(
        "POST",
        uri.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(GET_CALLER_IDENTITY_BODY.as_bytes()),
    )
    .map_err(|e| IamError::Signing {
        reason: format!("the request is not signable: {e}"),
    })?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| IamError::Signing {
            // The signer's errors name header values that are not valid, never secrets.
            reason: format!("SigV4 signing failed: {e}"),
        })?
        .into_parts();
    instructions.apply_to_request_http1x(&mut request);

    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"POST / HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(
        format!("content-length: {}\r\n\r\n", GET_CALLER_IDENTITY_BODY.len()).as_bytes(),
    );
    out.extend_from_slice(GET_CALLER_IDENTITY_BODY.as_bytes());
    tracing::debug!(%host, region = %target.region, bytes = out.len(), "signed sts:GetCallerIdentity");
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> AwsEnv {
        AwsEnv {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            home: None,
        }
    }

    fn target(url: &str, region: &str) -> StsTarget {
        StsTarget {
            url: url.into(),
            region: region.into(),
        }
    }

    #[test]
    fn resolve_cases() {
        assert_eq!(
            resolve_sts_target(&env(&[])),
            target("https://sts.amazonaws.com", "us-east-1")
        );
        assert_eq!(
            resolve_sts_target(&env(&[("AWS_REGION", "eu-west-1")])),
            target("https://sts.eu-west-1.amazonaws.com", "eu-west-1")
        );
        assert_eq!(
            resolve_sts_target(&env(&[("AWS_DEFAULT_REGION", "ap-south-2")])),
            target("https://sts.ap-south-2.amazonaws.com", "ap-south-2")
        );
        assert_eq!(
            resolve_sts_target(&env(&[
                ("AWS_REGION", "us-west-2"),
                ("AWS_USE_FIPS_ENDPOINT", "true")
            ])),
            target("https://sts-fips.us-west-2.amazonaws.com", "us-west-2")
        );
        assert_eq!(
            resolve_sts_target(&env(&[
                ("AWS_REGION", "us-west-2"),
                ("AWS_USE_FIPS_ENDPOINT", "false")
            ])),
            target("https://sts.us-west-2.amazonaws.com", "us-west-2")
        );
        assert_eq!(
            resolve_sts_target(&env(&[("AWS_USE_FIPS_ENDPOINT", "TRUE")])),
            target("https://sts-fips.us-east-1.amazonaws.com", "us-east-1")
        );
        assert_eq!(
            resolve_sts_target(&env(&[
                ("AWS_REGION", "us-gov-west-1"),
                ("AWS_USE_FIPS_ENDPOINT", "true")
            ])),
            target("https://sts.us-gov-west-1.amazonaws.com", "us-gov-west-1")
        );
        assert_eq!(
            resolve_sts_target(&env(&[("AWS_REGION", "cn-north-1")])),
            target("https://sts.cn-north-1.amazonaws.com.cn", "cn-north-1")
        );
        assert_eq!(
            resolve_sts_target(&env(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:5000/")])),
            target("http://127.0.0.1:5000", "us-east-1")
        );
        assert_eq!(
            resolve_sts_target(&env(&[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
                ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:6000/"),
                ("AWS_REGION", "eu-central-1"),
            ])),
            target("http://127.0.0.1:6000", "eu-central-1")
        );
        // Empty variables count as unset.
        assert_eq!(
            resolve_sts_target(&env(&[("AWS_ENDPOINT_URL_STS", ""), ("AWS_REGION", "")])),
            target("https://sts.amazonaws.com", "us-east-1")
        );
    }

    fn creds() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    #[test]
    fn host_header_port_only_when_not_default() {
        for (url, host) in [
            ("https://sts.amazonaws.com", "host: sts.amazonaws.com\r\n"),
            (
                "https://sts.amazonaws.com:443",
                "host: sts.amazonaws.com\r\n",
            ),
            ("http://127.0.0.1:80", "host: 127.0.0.1\r\n"),
            ("http://127.0.0.1:5000", "host: 127.0.0.1:5000\r\n"),
            ("https://127.0.0.1:80", "host: 127.0.0.1:80\r\n"),
        ] {
            let raw = sign_identity_request(
                &creds(),
                &target(url, "us-east-1"),
                "c",
                SystemTime::UNIX_EPOCH,
            )
            .unwrap();
            let text = String::from_utf8(raw).unwrap();
            assert!(text.contains(host), "{url}: {text}");
        }
    }

    #[test]
    fn refuses_bad_targets_and_challenges() {
        for url in [
            "sts.amazonaws.com",
            "https://sts.amazonaws.com/x",
            "ftp://x",
        ] {
            let e = sign_identity_request(
                &creds(),
                &target(url, "us-east-1"),
                "c",
                SystemTime::UNIX_EPOCH,
            )
            .unwrap_err();
            assert!(matches!(e, IamError::InvalidStsTarget { .. }), "{url}: {e}");
        }
        let e = sign_identity_request(
            &creds(),
            &target("https://sts.amazonaws.com", "us east"),
            "c",
            SystemTime::UNIX_EPOCH,
        )
        .unwrap_err();
        assert!(matches!(e, IamError::InvalidStsTarget { .. }), "{e}");
        for c in ["", "a\r\nb", "é"] {
            let e = sign_identity_request(
                &creds(),
                &target("https://sts.amazonaws.com", "us-east-1"),
                c,
                SystemTime::UNIX_EPOCH,
            )
            .unwrap_err();
            assert!(matches!(e, IamError::Signing { .. }), "{e}");
        }
        let mut bad = creds();
        bad.session_token = Some("line\nbreak".into());
        let e = sign_identity_request(
            &bad,
            &target("https://sts.amazonaws.com", "us-east-1"),
            "c",
            SystemTime::UNIX_EPOCH,
        )
        .unwrap_err();
        assert!(matches!(e, IamError::Signing { .. }), "{e}");
        assert!(!e.to_string().contains("line"), "{e}");
    }
}
