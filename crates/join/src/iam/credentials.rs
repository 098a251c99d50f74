//! The bot's AWS credentials, from the usual places in the usual order.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::iam::http::{self, HttpError, Url, sanitize};
use crate::iam::{IamError, Scheme};

/// AWS credentials. `Debug` never shows the secret or the session token.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// The access key id (`AKIA...`/`ASIA...`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token of temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where the credentials came from (for logs and error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialSource {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    Environment,
    /// A profile of the shared credentials or config file.
    Profile {
        /// The profile name.
        profile: String,
        /// The file it was read from.
        file: PathBuf,
    },
    /// The ECS/EKS container credentials endpoint.
    Container {
        /// The URL asked.
        url: String,
    },
    /// The EC2 instance metadata service (IMDSv2).
    InstanceMetadata {
        /// The instance role's name.
        role: String,
    },
}

/// The environment the credential chain and endpoint resolution read: variables and the home
/// directory. [`AwsEnv::from_process`] takes the real ones; tests build their own.
#[derive(Debug, Clone, Default)]
pub struct AwsEnv {
    /// Environment variables (only `AWS_*` ones matter).
    pub vars: HashMap<String, String>,
    /// The home directory, for `~/.aws/credentials` and `~/.aws/config`.
    pub home: Option<PathBuf>,
}

impl AwsEnv {
    /// The process's environment and home directory.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars()
                .filter(|(k, _)| k.starts_with("AWS_"))
                .collect(),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    /// A variable, if set and not empty.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

impl AwsEnv {
    /// The profile the shared files are read for: `AWS_PROFILE`, else `default`; and whether
    /// it was named explicitly.
    fn profile(&self) -> (String, bool) {
        match self.var("AWS_PROFILE") {
            Some(p) => (p.to_string(), true),
            None => ("default".to_string(), false),
        }
    }

    /// A path from a variable (with `~/` expanded) or `~/.aws/<file>`.
    fn aws_file(&self, var: &str, file: &str) -> Option<PathBuf> {
        match self.var(var) {
            Some(p) => Some(match (p.strip_prefix("~/"), &self.home) {
                (Some(rest), Some(home)) => home.join(rest),
                _ => PathBuf::from(p),
            }),
            None => self.home.as_ref().map(|h| h.join(".aws").join(file)),
        }
    }

    /// The shared credentials file: `AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`.
    pub fn credentials_file(&self) -> Option<PathBuf> {
        self.aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
    }

    /// The shared config file: `AWS_CONFIG_FILE` or `~/.aws/config`.
    pub fn config_file(&self) -> Option<PathBuf> {
        self.aws_file("AWS_CONFIG_FILE", "config")
    }

    /// The region: `AWS_REGION`, then `AWS_DEFAULT_REGION`, then `region` in the profile's
    /// section of the config file (read from disk, synchronously).
    pub fn region(&self) -> Option<String> {
        if let Some(r) = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .filter_map(|v| self.var(v))
            .map(str::trim)
            .find(|r| !r.is_empty())
        {
            return Some(r.to_string());
        }
        let (profile, _) = self.profile();
        let text = std::fs::read_to_string(self.config_file()?).ok()?;
        config_section(&parse_ini(&text), &profile)?
            .get("region")
            .filter(|r| !r.is_empty())
            .cloned()
    }
}

/// An INI file: section name to keys and values.
type Ini = HashMap<String, HashMap<String, String>>;

/// Parses the AWS INI dialect: `[section]`, `key = value`, full-line comments with `#` or
/// `;`. Indented lines (sub-sections such as `s3 =` blocks) are skipped; the first occurrence
/// of a section or key wins.
fn parse_ini(text: &str) -> Ini {
    let mut ini = Ini::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        let indented = line.starts_with([' ', '\t']);
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            section = name.split_once(']').map(|(n, _)| n.trim().to_string());
            if let Some(s) = &section {
                ini.entry(s.clone()).or_default();
            }
            continue;
        }
        if indented {
            continue;
        }
        let (Some(s), Some((k, v))) = (&section, line.split_once('=')) else {
            continue;
        };
        if let Some(keys) = ini.get_mut(s) {
            keys.entry(k.trim().to_ascii_lowercase())
                .or_insert_with(|| v.trim().to_string());
        }
    }
    ini
}

/// The config file's section for `profile`: `[profile name]`, or `[default]` for the default.
fn config_section<'a>(ini: &'a Ini, profile: &str) -> Option<&'a HashMap<String, String>> {
    let key = format!("profile {profile}");
    ini.iter()
        .find(|(name, _)| name.split_whitespace().collect::<Vec<_>>().join(" ") == key)
        .map(|(_, v)| v)
        .or_else(|| (profile == "default").then(|| ini.get("default")).flatten())
}

/// Keys of a profile that get credentials in ways not supported yet.
const UNSUPPORTED_KEYS: &[&str] = &[
    "role_arn",
    "source_profile",
    "credential_source",
    "credential_process",
    "web_identity_token_file",
    "sso_session",
    "sso_start_url",
    "sso_account_id",
    "sso_role_name",
    "sso_region",
    "login_session",
];

/// What the shared files gave.
enum ProfileOutcome {
    Found(AwsCredentials, CredentialSource),
    /// Nothing usable; why (for the combined error).
    Nothing(String),
}

/// The shared-files step of the chain.
fn profile_credentials(env: &AwsEnv) -> Result<ProfileOutcome, IamError> {
    let (profile, explicit) = env.profile();
    let mut searched = Vec::new();
    let mut sections: Vec<(PathBuf, HashMap<String, String>)> = Vec::new();
    for (path, is_config) in [(env.credentials_file(), false), (env.config_file(), true)] {
        let Some(path) = path else {
            searched.push(format!(
                "no {} file (no home directory)",
                if is_config { "config" } else { "credentials" }
            ));
            continue;
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                searched.push(format!("{} (no such file)", path.display()));
                continue;
            }
            Err(e) => {
                searched.push(format!("{} (unreadable: {e})", path.display()));
                continue;
            }
        };
        let ini = parse_ini(&text);
        let section = if is_config {
            config_section(&ini, &profile)
        } else {
            ini.get(&profile)
        };
        match section {
            Some(keys) => {
                searched.push(format!("{} (has the profile)", path.display()));
                sections.push((path, keys.clone()));
            }
            None => searched.push(format!("{} (no such profile)", path.display())),
        }
    }
    let searched = searched.join(", ");
    if sections.is_empty() {
        if explicit {
            return Err(IamError::ProfileNotFound { profile, searched });
        }
        return Ok(ProfileOutcome::Nothing(format!(
            "shared files: no profile {profile:?} in {searched}"
        )));
    }
    // The credentials file comes first, so it wins.
    for (path, keys) in &sections {
        let id = keys.get("aws_access_key_id").filter(|v| !v.is_empty());
        let secret = keys.get("aws_secret_access_key").filter(|v| !v.is_empty());
        let file = path.display().to_string();
        match (id, secret) {
            (Some(id), Some(secret)) => {
                return Ok(ProfileOutcome::Found(
                    AwsCredentials {
                        access_key_id: id.clone(),
                        secret_access_key: secret.clone(),
                        session_token: keys
                            .get("aws_session_token")
                            .filter(|v| !v.is_empty())
                            .cloned(),
                    },
                    CredentialSource::Profile {
                        profile,
                        file: path.clone(),
                    },
                ));
            }
            (Some(_), None) => {
                return Err(IamError::ProfileIncomplete {
                    profile,
                    file,
                    present: "aws_access_key_id",
                    missing: "aws_secret_access_key",
                });
            }
            (None, Some(_)) => {
                return Err(IamError::ProfileIncomplete {
                    profile,
                    file,
                    present: "aws_secret_access_key",
                    missing: "aws_access_key_id",
                });
            }
            (None, None) => {}
        }
    }
    for (path, keys) in &sections {
        let mut used: Vec<&str> = UNSUPPORTED_KEYS
            .iter()
            .copied()
            .filter(|k| keys.contains_key(*k))
            .collect();
        used.sort_unstable();
        if !used.is_empty() {
            return Err(IamError::ProfileUnsupported {
                profile,
                file: path.display().to_string(),
                keys: used.join(", "),
            });
        }
    }
    Ok(ProfileOutcome::Nothing(format!(
        "shared files: profile {profile:?} has no aws_access_key_id/aws_secret_access_key ({searched})"
    )))
}

/// The container credentials endpoint of ECS (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`) or
/// EKS Pod Identity and others (`AWS_CONTAINER_CREDENTIALS_FULL_URI`).
const ECS_HOST: &str = "http://169.254.170.2";
/// Link-local hosts AWS serves container credentials on over plain HTTP (ECS, EKS Pod
/// Identity over IPv4 and IPv6).
const CONTAINER_HOSTS: &[&str] = &["169.254.170.2", "169.254.170.23", "fd00:ec2::23"];

/// Bounds for the metadata endpoints: short, so a machine without them fails fast.
const METADATA_LIMITS: http::Limits = http::Limits {
    connect: Duration::from_secs(1),
    total: Duration::from_secs(5),
    max_body: 64 * 1024,
};

/// The container endpoint's URL, if configured.
fn container_url(env: &AwsEnv) -> Result<Option<Url>, IamError> {
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
struct MetadataCredentials {
    code: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    token: Option<String>,
    expiration: Option<String>,
}

impl MetadataCredentials {
    fn parse(body: &[u8]) -> Result<AwsCredentials, String> {
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

async fn container_credentials(env: &AwsEnv, url: &Url) -> Result<AwsCredentials, IamError> {
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
async fn instance_credentials(base: &Url) -> Result<(AwsCredentials, String), String> {
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

fn describe(e: &HttpError) -> String {
    match e {
        HttpError::Timeout => format!("no answer within {:?}", METADATA_LIMITS.total),
        HttpError::Connect(r) => format!("cannot connect: {r}"),
        HttpError::TooLarge => format!("answered more than {} bytes", METADATA_LIMITS.max_body),
        HttpError::Protocol(r) => format!("broken HTTP exchange: {r}"),
    }
}

fn scheme_str(s: Scheme) -> &'static str {
    match s {
        Scheme::Http => "http",
        Scheme::Https => "https",
    }
}

/// Finds credentials: environment, shared credentials/config profile, container credentials,
/// EC2 instance metadata (IMDSv2), in that order.
///
/// 1. `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (with `AWS_SESSION_TOKEN` if set); one
///    without the other is an error.
/// 2. The profile `AWS_PROFILE` (else `default`) of the shared credentials file, then of the
///    config file (`[profile name]`). A profile named explicitly but found nowhere is an
///    error, as is one that gets credentials through roles, processes or SSO (not supported).
/// 3. The container endpoint (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`, with
///    `AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)`); once configured, its failure is an error.
/// 4. IMDSv2 at `AWS_EC2_METADATA_SERVICE_ENDPOINT` or `http://169.254.169.254`, unless
///    `AWS_EC2_METADATA_DISABLED=true`; 1 s to connect, 5 s in all.
///
/// When none gives credentials, [`IamError::NoCredentials`] lists each place and why.
pub async fn load_credentials(
    env: &AwsEnv,
) -> Result<(AwsCredentials, CredentialSource), IamError> {
    let mut tried = Vec::new();

    match (
        env.var("AWS_ACCESS_KEY_ID"),
        env.var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => {
            tracing::debug!(source = "environment", access_key_id = %id, "AWS credentials found");
            return Ok((
                AwsCredentials {
                    access_key_id: id.to_string(),
                    secret_access_key: secret.to_string(),
                    session_token: env.var("AWS_SESSION_TOKEN").map(str::to_string),
                },
                CredentialSource::Environment,
            ));
        }
        (Some(_), None) => {
            return Err(IamError::EnvCredentialsIncomplete {
                set: "AWS_ACCESS_KEY_ID",
                missing: "AWS_SECRET_ACCESS_KEY",
            });
        }
        (None, Some(_)) => {
            return Err(IamError::EnvCredentialsIncomplete {
                set: "AWS_SECRET_ACCESS_KEY",
                missing: "AWS_ACCESS_KEY_ID",
            });
        }
        (None, None) => tried.push(
            "environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set".to_string(),
        ),
    }

    match profile_credentials(env)? {
        ProfileOutcome::Found(creds, source) => {
            tracing::debug!(?source, access_key_id = %creds.access_key_id, "AWS credentials found");
            return Ok((creds, source));
        }
        ProfileOutcome::Nothing(why) => tried.push(why),
    }

    match container_url(env)? {
        Some(url) => {
            let creds = container_credentials(env, &url).await?;
            let url = format!("{}://{}{}", scheme_str(url.scheme), url.authority(), url.path);
            tracing::debug!(source = "container", %url, access_key_id = %creds.access_key_id, "AWS credentials found");
            return Ok((creds, CredentialSource::Container { url }));
        }
        None => tried.push(
            "container credentials: neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor AWS_CONTAINER_CREDENTIALS_FULL_URI is set"
                .to_string(),
        ),
    }

    if env
        .var("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        tried.push("EC2 instance metadata: disabled by AWS_EC2_METADATA_DISABLED=true".into());
    } else {
        let endpoint = env
            .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or("http://169.254.169.254");
        match Url::parse(endpoint) {
            Err(e) => tried.push(format!(
                "EC2 instance metadata: AWS_EC2_METADATA_SERVICE_ENDPOINT {:?} is not a usable URL: {e}",
                sanitize(endpoint, 200)
            )),
            Ok(base) => {
                match tokio::time::timeout(METADATA_LIMITS.total, instance_credentials(&base))
                    .await
                {
                    Ok(Ok((creds, role))) => {
                        tracing::debug!(source = "imds", %role, access_key_id = %creds.access_key_id, "AWS credentials found");
                        return Ok((creds, CredentialSource::InstanceMetadata { role }));
                    }
                    Ok(Err(why)) => tried.push(format!(
                        "EC2 instance metadata at {}: {why}",
                        sanitize(endpoint, 200)
                    )),
                    Err(_) => tried.push(format!(
                        "EC2 instance metadata at {}: no answer within {:?}",
                        sanitize(endpoint, 200),
                        METADATA_LIMITS.total
                    )),
                }
            }
        }
    }

    tracing::debug!(?tried, "no AWS credentials found");
    Err(IamError::NoCredentials { tried })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn ini_dialect() {
        let ini = parse_ini(
            "# comment\n; another\n[default]\naws_access_key_id = AKID\nAWS_Secret_Access_Key=SECRET \n\n[profile x]\nregion = eu-west-1\ns3 =\n  max_concurrent_requests = 20\n[ profile  y ]\nregion=us-east-2\n[default]\naws_access_key_id = LATER\n",
        );
        assert_eq!(ini["default"]["aws_access_key_id"], "AKID");
        assert_eq!(ini["default"]["aws_secret_access_key"], "SECRET");
        assert!(!ini["profile x"].contains_key("max_concurrent_requests"));
        assert_eq!(config_section(&ini, "x").unwrap()["region"], "eu-west-1");
        assert_eq!(config_section(&ini, "y").unwrap()["region"], "us-east-2");
        assert!(config_section(&ini, "z").is_none());
        assert!(config_section(&ini, "default").is_some());
    }

    #[test]
    fn region_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            "[default]\nregion = eu-north-1\n[profile p]\nregion = ap-south-2\n",
        )
        .unwrap();
        let mut env = AwsEnv::default();
        env.vars
            .insert("AWS_CONFIG_FILE".into(), config.display().to_string());
        assert_eq!(env.region().as_deref(), Some("eu-north-1"));
        env.vars.insert("AWS_PROFILE".into(), "p".into());
        assert_eq!(env.region().as_deref(), Some("ap-south-2"));
        env.vars
            .insert("AWS_DEFAULT_REGION".into(), "us-west-1".into());
        assert_eq!(env.region().as_deref(), Some("us-west-1"));
        env.vars.insert("AWS_REGION".into(), "us-west-2".into());
        assert_eq!(env.region().as_deref(), Some("us-west-2"));
        // Blank counts as unset.
        env.vars.insert("AWS_REGION".into(), "  ".into());
        assert_eq!(env.region().as_deref(), Some("us-west-1"));
    }

    #[test]
    fn file_paths() {
        let env = AwsEnv {
            vars: HashMap::from([("AWS_CONFIG_FILE".into(), "~/x/config".into())]),
            home: Some("/home/bot".into()),
        };
        assert_eq!(
            env.config_file().unwrap(),
            PathBuf::from("/home/bot/x/config")
        );
        assert_eq!(
            env.credentials_file().unwrap(),
            PathBuf::from("/home/bot/.aws/credentials")
        );
        assert!(AwsEnv::default().credentials_file().is_none());
    }

    #[test]
    fn container_url_rules() {
        let env = |k: &str, v: &str| AwsEnv {
            vars: HashMap::from([(k.to_string(), v.to_string())]),
            home: None,
        };
        let u = container_url(&env(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/creds?id=1",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            (u.authority().as_str(), u.path.as_str()),
            ("169.254.170.2", "/v2/creds?id=1")
        );
        assert!(container_url(&env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "v2")).is_err());
        for ok in [
            "http://127.0.0.1:9/creds",
            "http://localhost/creds",
            "http://[::1]/creds",
            "https://creds.example.com/x",
            "http://169.254.170.23/v1/credentials",
        ] {
            assert!(
                container_url(&env("AWS_CONTAINER_CREDENTIALS_FULL_URI", ok)).is_ok(),
                "{ok}"
            );
        }
        let e = container_url(&env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://creds.example.com/x",
        ))
        .unwrap_err();
        assert!(matches!(e, IamError::ContainerCredentials { .. }), "{e}");
        assert!(container_url(&AwsEnv::default()).unwrap().is_none());
    }

    #[test]
    fn metadata_json() {
        let c = MetadataCredentials::parse(
            br#"{"Code":"Success","AccessKeyId":"ASIA1","SecretAccessKey":"s","Token":"t","Expiration":"2030-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(c.session_token.as_deref(), Some("t"));
        assert!(MetadataCredentials::parse(br#"{"Code":"Failure"}"#).is_err());
        assert!(MetadataCredentials::parse(br#"{"AccessKeyId":"A"}"#).is_err());
        assert!(MetadataCredentials::parse(b"nope").is_err());
    }

    #[test]
    fn debug_redacts() {
        let c = AwsCredentials {
            access_key_id: "AKID".into(),
            secret_access_key: "SECRET".into(),
            session_token: Some("TOKEN".into()),
        };
        let d = format!("{c:?}");
        assert!(
            d.contains("AKID") && !d.contains("SECRET") && !d.contains("TOKEN"),
            "{d}"
        );
    }
}
