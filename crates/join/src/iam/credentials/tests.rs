//! The credential chain's unit tests: environment, shared profiles, container and instance
//! metadata endpoints (served locally), and the order between them.
#![allow(clippy::unwrap_used)] // tests

use super::metadata::MetadataCredentials;
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
