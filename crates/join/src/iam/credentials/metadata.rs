//! Credentials from AWS metadata endpoints: the container endpoint (ECS, EKS Pod Identity)
//! and EC2 instance metadata with IMDSv2.

use std::time::Duration;

use super::{AwsCredentials, AwsEnv};
use crate::iam::http::{self, HttpError, Url, sanitize};
use crate::iam::{IamError, Scheme};

/// The container credentials endpoint of ECS (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`) or
/// EKS Pod Identity and others (`AWS_CONTAINER_CREDENTIALS_FULL_URI`).
pub(super) const ECS_HOST: &str = "http://169.254.170.2";
/// Link-local hosts AWS serves container credentials on over plain HTTP (ECS, EKS Pod
/// Identity over IPv4 and IPv6).
pub(super) const CONTAINER_HOSTS: &[&str] = &["169.254.170.2", "169.254.170.23", "fd00:ec2::23"];

/// Bounds for the metadata endpoints: short, so a machine without them fails fast.
pub(super) const METADATA_LIMITS: http::Limits = http::Limits {
    connect: Duration::from_secs(1),
    total: Duration::from_secs(5),
    max_body: 64 * 1024,
};

/// The container endpoint's URL, if configured.
pub(super) fn container_url(env: &AwsEnv) -> Result<Option<Url>, IamError> {
    let (raw, relative) = if let Some(rel) = env.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        (format!("{ECS_HOST}{rel}"), true)
    } else if let Some(full) = env.var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        (full.to_string(), false)
    } else {
        return Ok(None);
    };
    let fail = |reason: String| IamError::ContainerCredentials {
        url: sanitize(&raw, 200),
        reason,
    };
    if relative && !raw[ECS_HOST.len()..].starts_with('/') {
        return Err(fail(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI does not start with /".into(),
        ));
    }
    let url = Url::parse(&raw).map_err(|e| fail(format!("not a usable URL: {e}")))?;
    if !relative
        && url.scheme == Scheme::Http
        && !url.is_loopback()
        && !CONTAINER_HOSTS.contains(&url.connect_host())
    {
        return Err(fail(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to a loopback host or the ECS/EKS link-local address"
                .into(),
        ));
    }
    Ok(Some(url))
}

/// The temporary credentials JSON both metadata endpoints answer.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct MetadataCredentials {
    code: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    token: Option<String>,
    expiration: Option<String>,
}

impl MetadataCredentials {
    pub(super) fn parse(body: &[u8]) -> Result<AwsCredentials, String> {
        let c: MetadataCredentials = serde_json::from_slice(body)
            .map_err(|e| format!("the answer is not credentials JSON: {e}"))?;
        if let Some(code) = c.code.as_deref().filter(|c| *c != "Success") {
            return Err(format!(
                "the answer says Code={:?}, not Success",
                sanitize(code, 64)
            ));
        }
        let (Some(id), Some(secret)) = (
            c.access_key_id.filter(|v| !v.is_empty()),
            c.secret_access_key.filter(|v| !v.is_empty()),
        ) else {
            return Err("the answer has no AccessKeyId or SecretAccessKey".into());
        };
        if let Some(exp) = &c.expiration {
            tracing::debug!(expiration = %sanitize(exp, 40), "temporary AWS credentials");
        }
        Ok(AwsCredentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: c.token.filter(|v| !v.is_empty()),
        })
    }
}

pub(super) async fn container_credentials(
    env: &AwsEnv,
    url: &Url,
) -> Result<AwsCredentials, IamError> {
    let shown = format!(
        "{}://{}{}",
        scheme_str(url.scheme),
        url.authority(),
        url.path
    );
    let fail = |reason: String| IamError::ContainerCredentials {
        url: sanitize(&shown, 200),
        reason,
    };
    let token = if let Some(file) = env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        let t = tokio::fs::read_to_string(file).await.map_err(|e| {
            fail(format!(
                "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {file}: {e}"
            ))
        })?;
        Some(t.trim().to_string())
    } else {
        env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN")
            .map(|t| t.trim().to_string())
    };
    let mut headers = vec![
        ("host".to_string(), url.authority()),
        ("accept".to_string(), "application/json".to_string()),
    ];
    if let Some(t) = token {
        if t.chars().any(char::is_control) {
            return Err(fail(
                "the authorization token has control characters (a line break?)".into(),
            ));
        }
        headers.push(("authorization".to_string(), t));
    }
    let resp = http::send(
        http::Request {
            method: "GET",
            url,
            headers: &headers,
            body: Vec::new(),
        },
        METADATA_LIMITS,
    )
    .await
    .map_err(|e| fail(describe(&e)))?;
    if !(200..300).contains(&resp.status) {
        return Err(fail(format!("HTTP {}", resp.status)));
    }
    MetadataCredentials::parse(&resp.body).map_err(fail)
}

/// The IMDSv2 exchange: a session token, the role name, the role's credentials. `Err` says
/// why (for the combined error).
pub(super) async fn instance_credentials(base: &Url) -> Result<(AwsCredentials, String), String> {
    let prefix = base.path.trim_end_matches('/');
    let at = |path: &str| Url {
        path: format!("{prefix}{path}"),
        ..base.clone()
    };
    let host = ("host".to_string(), base.authority());
    let get = |url: Url, token: String| {
        let headers = vec![
            host.clone(),
            ("x-aws-ec2-metadata-token".to_string(), token),
        ];
        async move {
            http::send(
                http::Request {
                    method: "GET",
                    url: &url,
                    headers: &headers,
                    body: Vec::new(),
                },
                METADATA_LIMITS,
            )
            .await
        }
    };
    let token_url = at("/latest/api/token");
    let resp = http::send(
        http::Request {
            method: "PUT",
            url: &token_url,
            headers: &[
                host.clone(),
                (
                    "x-aws-ec2-metadata-token-ttl-seconds".to_string(),
                    "21600".to_string(),
                ),
            ],
            body: Vec::new(),
        },
        METADATA_LIMITS,
    )
    .await
    .map_err(|e| format!("{} (not on EC2, or IMDS is unreachable)", describe(&e)))?;
    if !(200..300).contains(&resp.status) {
        return Err(format!(
            "the IMDSv2 token request (PUT /latest/api/token) answered HTTP {}",
            resp.status
        ));
    }
    let token = String::from_utf8_lossy(&resp.body).trim().to_string();
    if token.is_empty() || token.chars().any(char::is_control) {
        return Err("the IMDSv2 token request answered no usable token".into());
    }

    const ROLES: &str = "/latest/meta-data/iam/security-credentials/";
    let resp = get(at(ROLES), token.clone())
        .await
        .map_err(|e| describe(&e))?;
    if resp.status == 404 {
        return Err("no IAM role is attached to this instance; attach an instance profile".into());
    }
    if !(200..300).contains(&resp.status) {
        return Err(format!("{ROLES} answered HTTP {}", resp.status));
    }
    let roles = String::from_utf8_lossy(&resp.body);
    let role = roles
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or("no IAM role is attached to this instance; attach an instance profile")?
        .to_string();
    if !role
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
    {
        return Err(format!(
            "the instance role name {:?} is not a valid IAM role name",
            sanitize(&role, 64)
        ));
    }
    let resp = get(at(&format!("{ROLES}{role}")), token)
        .await
        .map_err(|e| describe(&e))?;
    if !(200..300).contains(&resp.status) {
        return Err(format!(
            "the credentials of role {role} answered HTTP {}",
            resp.status
        ));
    }
    let creds = MetadataCredentials::parse(&resp.body)
        .map_err(|e| format!("the credentials of role {role}: {e}"))?;
    Ok((creds, role))
}

pub(super) fn describe(e: &HttpError) -> String {
    match e {
        HttpError::Timeout => format!("no answer within {:?}", METADATA_LIMITS.total),
        HttpError::Connect(r) => format!("cannot connect: {r}"),
        HttpError::TooLarge => format!("answered more than {} bytes", METADATA_LIMITS.max_body),
        HttpError::Protocol(r) => format!("broken HTTP exchange: {r}"),
    }
}

pub(super) fn scheme_str(s: Scheme) -> &'static str {
    match s {
        Scheme::Http => "http",
        Scheme::Https => "https",
    }
}
