//! The bot's credential chain: environment, shared files, container endpoint, IMDSv2. Each
//! test builds its own `AwsEnv` (never the process's) with a temporary home directory, and
//! points IMDS at a loopback server or a dead port so nothing reaches 169.254.169.254.

use std::collections::HashMap;
use std::path::Path;

use machine_id_join::iam::{AwsCredentials, AwsEnv, CredentialSource, IamError, load_credentials};

use crate::support::{Reply, dead_port, serve};

/// An environment with `vars`, home `home`, and IMDS switched off unless `vars` says else.
fn env(home: &Path, vars: &[(&str, &str)]) -> AwsEnv {
    let mut v: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.entry("AWS_EC2_METADATA_DISABLED".into())
        .or_insert_with(|| "true".into());
    AwsEnv {
        vars: v,
        home: Some(home.to_path_buf()),
    }
}

fn write(home: &Path, rel: &str, text: &str) -> std::path::PathBuf {
    let p = home.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

fn keys(id: &str, secret: &str, token: Option<&str>) -> AwsCredentials {
    AwsCredentials {
        access_key_id: id.into(),
        secret_access_key: secret.into(),
        session_token: token.map(Into::into),
    }
}

#[tokio::test]
async fn environment_first() {
    let home = tempfile::tempdir().unwrap();
    write(
        home.path(),
        ".aws/credentials",
        "[default]\naws_access_key_id=FILE\naws_secret_access_key=F\n",
    );
    let e = env(
        home.path(),
        &[
            ("AWS_ACCESS_KEY_ID", "ENV"),
            ("AWS_SECRET_ACCESS_KEY", "S"),
            ("AWS_SESSION_TOKEN", "T"),
        ],
    );
    let (c, src) = load_credentials(&e).await.unwrap();
    assert_eq!(c, keys("ENV", "S", Some("T")));
    assert_eq!(src, CredentialSource::Environment);
}

#[tokio::test]
async fn environment_half_set() {
    let home = tempfile::tempdir().unwrap();
    let err = load_credentials(&env(home.path(), &[("AWS_ACCESS_KEY_ID", "ENV")]))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        IamError::EnvCredentialsIncomplete {
            set: "AWS_ACCESS_KEY_ID",
            missing: "AWS_SECRET_ACCESS_KEY"
        }
    );
    assert!(
        err.to_string().contains("AWS_SECRET_ACCESS_KEY is not"),
        "{err}"
    );
    let err = load_credentials(&env(home.path(), &[("AWS_SECRET_ACCESS_KEY", "S")]))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("AWS_ACCESS_KEY_ID is not"),
        "{err}"
    );
}

#[tokio::test]
async fn default_profile_from_credentials_file() {
    let home = tempfile::tempdir().unwrap();
    let file = write(
        home.path(),
        ".aws/credentials",
        "# comment\n[other]\naws_access_key_id = O\naws_secret_access_key = O\n\n[default]\n; comment\naws_access_key_id = AKID\naws_secret_access_key = SECRET\naws_session_token = TOKEN\n",
    );
    let (c, src) = load_credentials(&env(home.path(), &[])).await.unwrap();
    assert_eq!(c, keys("AKID", "SECRET", Some("TOKEN")));
    assert_eq!(
        src,
        CredentialSource::Profile {
            profile: "default".into(),
            file
        }
    );
}

#[tokio::test]
async fn named_profile_from_explicit_credentials_file() {
    let home = tempfile::tempdir().unwrap();
    let file = write(
        home.path(),
        "elsewhere/creds",
        "[ci]\naws_access_key_id=CI\naws_secret_access_key=CS\n",
    );
    let e = env(
        home.path(),
        &[
            ("AWS_PROFILE", "ci"),
            ("AWS_SHARED_CREDENTIALS_FILE", file.to_str().unwrap()),
        ],
    );
    let (c, src) = load_credentials(&e).await.unwrap();
    assert_eq!(c, keys("CI", "CS", None));
    assert_eq!(
        src,
        CredentialSource::Profile {
            profile: "ci".into(),
            file
        }
    );
}

#[tokio::test]
async fn profile_from_config_file() {
    let home = tempfile::tempdir().unwrap();
    let file = write(
        home.path(),
        ".aws/config",
        "[default]\nregion = us-east-1\n[profile x]\nregion = eu-west-1\naws_access_key_id = CFG\naws_secret_access_key = CFGS\n",
    );
    let (c, src) = load_credentials(&env(home.path(), &[("AWS_PROFILE", "x")]))
        .await
        .unwrap();
    assert_eq!(c, keys("CFG", "CFGS", None));
    assert_eq!(
        src,
        CredentialSource::Profile {
            profile: "x".into(),
            file
        }
    );
}

#[tokio::test]
async fn credentials_file_wins_over_config() {
    let home = tempfile::tempdir().unwrap();
    let creds = write(
        home.path(),
        ".aws/credentials",
        "[x]\naws_access_key_id=FROMCREDS\naws_secret_access_key=S\n",
    );
    write(
        home.path(),
        ".aws/config",
        "[profile x]\naws_access_key_id=FROMCONFIG\naws_secret_access_key=S\n",
    );
    let (c, src) = load_credentials(&env(home.path(), &[("AWS_PROFILE", "x")]))
        .await
        .unwrap();
    assert_eq!(c.access_key_id, "FROMCREDS");
    assert_eq!(
        src,
        CredentialSource::Profile {
            profile: "x".into(),
            file: creds
        }
    );
}

#[tokio::test]
async fn explicit_profile_missing() {
    let home = tempfile::tempdir().unwrap();
    write(
        home.path(),
        ".aws/credentials",
        "[default]\naws_access_key_id=A\naws_secret_access_key=S\n",
    );
    let err = load_credentials(&env(home.path(), &[("AWS_PROFILE", "nope")]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IamError::ProfileNotFound { profile, .. } if profile == "nope"),
        "{err}"
    );
    let m = err.to_string();
    assert!(
        m.contains("\"nope\"") && m.contains(".aws/credentials (no such profile)"),
        "{m}"
    );
    assert!(m.contains(".aws/config (no such file)"), "{m}");
}

#[tokio::test]
async fn unsupported_profile() {
    let home = tempfile::tempdir().unwrap();
    write(
        home.path(),
        ".aws/config",
        "[profile r]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = default\n",
    );
    let err = load_credentials(&env(home.path(), &[("AWS_PROFILE", "r")]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IamError::ProfileUnsupported { keys, .. } if keys == "role_arn, source_profile"),
        "{err}"
    );
    let m = err.to_string();
    assert!(
        m.contains("not supported yet") && m.contains("AWS_ACCESS_KEY_ID"),
        "{m}"
    );

    write(
        home.path(),
        ".aws/config",
        "[default]\nsso_session = corp\nsso_account_id = 1\n",
    );
    let err = load_credentials(&env(home.path(), &[])).await.unwrap_err();
    assert!(matches!(err, IamError::ProfileUnsupported { .. }), "{err}");
}

#[tokio::test]
async fn incomplete_profile() {
    let home = tempfile::tempdir().unwrap();
    write(
        home.path(),
        ".aws/credentials",
        "[default]\naws_access_key_id=A\n",
    );
    let err = load_credentials(&env(home.path(), &[])).await.unwrap_err();
    assert!(
        matches!(
            err,
            IamError::ProfileIncomplete {
                missing: "aws_secret_access_key",
                ..
            }
        ),
        "{err}"
    );
}

const METADATA_JSON: &str = r#"{"Code":"Success","LastUpdated":"2026-01-01T00:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIAMETA","SecretAccessKey":"METASECRET","Token":"METATOKEN","Expiration":"2026-01-01T06:00:00Z"}"#;

#[tokio::test]
async fn container_full_uri_with_token() {
    let server = serve(|r| {
        if r.header("authorization") == Some("Bearer secret-token") {
            Reply::ok("application/json", METADATA_JSON)
        } else {
            Reply::status(401, "text/plain", "no")
        }
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let url = format!("{}/v1/credentials?x=1", server.url());
    let e = env(
        home.path(),
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &url),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer secret-token"),
        ],
    );
    let (c, src) = load_credentials(&e).await.unwrap();
    assert_eq!(c, keys("ASIAMETA", "METASECRET", Some("METATOKEN")));
    assert_eq!(src, CredentialSource::Container { url });
    let got = server.recorded();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "GET");
    assert_eq!(got[0].path, "/v1/credentials?x=1");
    assert_eq!(got[0].header("authorization"), Some("Bearer secret-token"));
}

#[tokio::test]
async fn container_token_file_and_failure() {
    let server = serve(|r| {
        if r.header("authorization") == Some("from-file") {
            Reply::ok("application/json", METADATA_JSON)
        } else {
            Reply::status(403, "text/plain", "no")
        }
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let token_file = write(home.path(), "token", "from-file\n");
    let url = format!("{}/creds", server.url());
    let e = env(
        home.path(),
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &url),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.to_str().unwrap(),
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ignored-when-file-set"),
        ],
    );
    let (c, _) = load_credentials(&e).await.unwrap();
    assert_eq!(c.access_key_id, "ASIAMETA");

    // Configured but refusing: an error, not a silent fall-through.
    let e = env(home.path(), &[("AWS_CONTAINER_CREDENTIALS_FULL_URI", &url)]);
    let err = load_credentials(&e).await.unwrap_err();
    assert!(
        matches!(err, IamError::ContainerCredentials { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HTTP 403"), "{err}");

    // Plain HTTP to a remote host is refused before any request.
    let e = env(
        home.path(),
        &[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://example.com/creds",
        )],
    );
    let err = load_credentials(&e).await.unwrap_err();
    assert!(err.to_string().contains("must be https"), "{err}");
}

/// A fake IMDS that insists on IMDSv2: a PUT for a token first, then only GETs with it.
async fn imds() -> crate::support::FakeServer {
    serve(|r| {
        const TOKEN: &str = "IMDSV2TOKEN";
        match (r.method.as_str(), r.path.as_str()) {
            ("PUT", "/latest/api/token") => {
                if r.header("x-aws-ec2-metadata-token-ttl-seconds") == Some("21600") {
                    Reply::ok("text/plain", TOKEN)
                } else {
                    Reply::status(400, "text/plain", "missing ttl")
                }
            }
            (_, _) if r.header("x-aws-ec2-metadata-token") != Some(TOKEN) => {
                Reply::status(401, "text/plain", "IMDSv1 refused")
            }
            ("GET", "/latest/meta-data/iam/security-credentials/") => {
                Reply::ok("text/plain", "bot-instance-role\n")
            }
            ("GET", "/latest/meta-data/iam/security-credentials/bot-instance-role") => {
                Reply::ok("application/json", METADATA_JSON)
            }
            _ => Reply::status(404, "text/plain", "not found"),
        }
    })
    .await
}

#[tokio::test]
async fn instance_metadata_v2() {
    let server = imds().await;
    let home = tempfile::tempdir().unwrap();
    let e = env(
        home.path(),
        &[
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &server.url()),
        ],
    );
    let (c, src) = load_credentials(&e).await.unwrap();
    assert_eq!(c, keys("ASIAMETA", "METASECRET", Some("METATOKEN")));
    assert_eq!(
        src,
        CredentialSource::InstanceMetadata {
            role: "bot-instance-role".into()
        }
    );
    let got = server.recorded();
    let seen: Vec<(&str, &str)> = got
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("PUT", "/latest/api/token"),
            ("GET", "/latest/meta-data/iam/security-credentials/"),
            (
                "GET",
                "/latest/meta-data/iam/security-credentials/bot-instance-role"
            ),
        ]
    );
}

#[tokio::test]
async fn instance_without_role() {
    let server = serve(|r| match r.method.as_str() {
        "PUT" => Reply::ok("text/plain", "T"),
        _ => Reply::status(404, "text/plain", ""),
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let e = env(
        home.path(),
        &[
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &server.url()),
        ],
    );
    let err = load_credentials(&e).await.unwrap_err();
    assert!(err.to_string().contains("no IAM role is attached"), "{err}");
}

#[tokio::test]
async fn nothing_found_lists_every_place() {
    let home = tempfile::tempdir().unwrap();
    let imds = format!("http://127.0.0.1:{}", dead_port().await);
    let e = env(
        home.path(),
        &[
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds),
        ],
    );
    let err = load_credentials(&e).await.unwrap_err();
    let IamError::NoCredentials { tried } = &err else {
        panic!("{err}");
    };
    assert_eq!(tried.len(), 4, "{tried:?}");
    let m = err.to_string();
    for needle in [
        "no AWS credentials found",
        "environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set",
        "shared files: no profile \"default\"",
        "container credentials: neither",
        &format!("EC2 instance metadata at {imds}: cannot connect"),
        "set AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "EC2, ECS or EKS",
    ] {
        assert!(m.contains(needle), "{needle:?} not in {m}");
    }

    // Disabled IMDS is said so.
    let err = load_credentials(&env(home.path(), &[])).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("disabled by AWS_EC2_METADATA_DISABLED=true"),
        "{err}"
    );
}

#[tokio::test]
async fn default_profile_without_keys_falls_through() {
    let home = tempfile::tempdir().unwrap();
    write(
        home.path(),
        ".aws/config",
        "[default]\nregion = eu-west-1\n",
    );
    let server = imds().await;
    let e = env(
        home.path(),
        &[
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &server.url()),
        ],
    );
    let (_, src) = load_credentials(&e).await.unwrap();
    assert!(matches!(src, CredentialSource::InstanceMetadata { .. }));
}
