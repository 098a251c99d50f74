//! The config's unit tests: the v1 YAML shape, flag overrides, validation, token files and
//! overlap checks.
#![allow(clippy::unwrap_used)] // tests

use super::*;

const FULL: &str = r#"
auth_server: auth.example.com:3025
certificate_ttl: 30m
renewal_interval: 10m
oneshot: true
ca_rotation_debounce: 1s
onboarding:
  join_method: token
  token: abcd
  ca_pins: ["sha256:00"]
storage:
  directory: /var/lib/bot
destinations:
  - directory:
      path: /opt/machine-id
      symlinks: secure
    roles: [access]
  - directory: /opt/other
"#;

#[test]
fn parses_the_v1_shape() {
    let c = BotConfig::from_yaml(FULL).unwrap();
    assert_eq!(c.auth_server.as_deref(), Some("auth.example.com:3025"));
    assert_eq!(c.certificate_ttl(), Duration::from_secs(1800));
    assert_eq!(c.renewal_interval(), Duration::from_secs(600));
    assert!(c.oneshot);
    assert_eq!(c.ca_rotation_debounce, Some(Duration::from_secs(1)));
    assert_eq!(c.onboarding.token.as_deref(), Some("abcd"));
    assert_eq!(c.storage.data_dir(), Some(PathBuf::from("/var/lib/bot")));
    assert_eq!(c.destinations.len(), 2);
    let d0 = c.destinations[0].directory.as_ref().unwrap();
    assert_eq!(d0.symlinks, SymlinkPolicy::Secure);
    assert_eq!(c.destinations[0].roles, ["access"]);
    let d1 = c.destinations[1].directory.as_ref().unwrap();
    assert_eq!(d1.path, PathBuf::from("/opt/other"));
    assert_eq!(d1.symlinks, SymlinkPolicy::TrySecure);
    c.validate().unwrap();
}

#[test]
fn defaults() {
    let c = BotConfig::from_yaml("auth_server: a:1\n").unwrap();
    // The README's numbers, not the constants compared with themselves.
    assert_eq!(c.certificate_ttl(), Duration::from_secs(60 * 60), "60m");
    assert_eq!(c.renewal_interval(), Duration::from_secs(20 * 60), "20m");
    assert_eq!(
        c.storage.data_dir(),
        Some(PathBuf::from("/var/lib/teleport/bot"))
    );
    assert_eq!(
        (DEFAULT_CERTIFICATE_TTL, DEFAULT_RENEWAL_INTERVAL),
        (c.certificate_ttl(), c.renewal_interval())
    );
    assert_eq!(c.ca_rotation_debounce, None);
    assert_eq!(
        crate::DEFAULT_CA_ROTATION_DEBOUNCE,
        Duration::from_secs(10),
        "like Teleport"
    );
    let m = BotConfig::from_yaml("storage:\n  memory: {}\n").unwrap();
    assert_eq!(m.storage.data_dir(), None);
}

#[test]
fn unknown_fields_and_bad_durations_are_refused() {
    let e = BotConfig::from_yaml("auth_servr: a:1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("auth_servr"), "{e}");
    let e = BotConfig::from_yaml("certificate_ttl: 10\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unit"), "{e}");
    let e = BotConfig::from_yaml("destinations:\n - directory: {path: /x, symlinks: nope}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid configuration"), "{e}");
}

#[test]
fn flags_override_and_say_so() {
    let mut c = BotConfig::from_yaml(FULL).unwrap();
    let changed = c.apply(Overrides {
        auth_server: Some("other:3025".into()),
        certificate_ttl: Some(Duration::from_secs(60)),
        destination_dir: Some("/tmp/d".into()),
        token: Some("abcd".into()),
        ..Overrides::default()
    });
    assert_eq!(c.auth_server.as_deref(), Some("other:3025"));
    assert_eq!(c.certificate_ttl(), Duration::from_secs(60));
    let d0 = c.destinations[0].directory.as_ref().unwrap();
    assert_eq!(d0.path, PathBuf::from("/tmp/d"));
    assert_eq!(
        d0.symlinks,
        SymlinkPolicy::Secure,
        "the file's policy is kept"
    );
    assert!(changed.contains(&"auth_server"));
    assert!(changed.contains(&"certificate_ttl"));
    assert!(changed.contains(&"destinations[0].directory"));
    assert!(
        !changed.contains(&"onboarding.token"),
        "same value: not an override"
    );
    assert!(c.ttl_shorter_than_interval());
}

#[test]
fn configure_round_trips() {
    let mut c = BotConfig::default();
    c.apply(Overrides {
        auth_server: Some("127.0.0.1:3025".into()),
        token: Some("t".into()),
        ca_pins: vec!["sha256:ab".into()],
        destination_dir: Some("/opt/machine-id".into()),
        data_dir: Some("/var/lib/bot".into()),
        certificate_ttl: Some(Duration::from_secs(3600)),
        ..Overrides::default()
    });
    let yaml = c.to_yaml().unwrap();
    assert!(yaml.contains("certificate_ttl: 1h0m0s"), "{yaml}");
    assert_eq!(BotConfig::from_yaml(&yaml).unwrap(), c);
}

#[test]
fn validate_names_the_fix() {
    let e = BotConfig::default().validate().unwrap_err().to_string();
    assert!(e.contains("--auth-server"), "{e}");
    let e = BotConfig::from_yaml("auth_server: host\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("no port"), "{e}");
}

#[test]
fn overlapping_destination_and_data_dir_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let data = base.join("data");
    std::fs::create_dir(&data).unwrap();
    for (dest, relation) in [
        (data.clone(), "is"),
        (base.join("data/out"), "lies inside"),
        (base.join("data/a/../out/x"), "lies inside"),
        (base.to_path_buf(), "contains"),
        (base.join("new/../data"), "is"),
    ] {
        let e = check_overlap(&data, &dest).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "destination {} {relation} the data directory {}",
                dest.display(),
                data.display()
            )),
            "{msg}"
        );
        assert!(
            msg.contains("--destination-dir outside --data-dir"),
            "{msg}"
        );
    }
    // Through a symlink.
    std::os::unix::fs::symlink(&data, base.join("link")).unwrap();
    let e = check_overlap(&data, &base.join("link/out")).unwrap_err();
    assert!(e.to_string().contains("lies inside"), "{e}");
    // Siblings with a common prefix do not overlap.
    check_overlap(&data, &base.join("data2")).unwrap();
    check_overlap(&base.join("not-yet/data"), &base.join("not-yet/dest")).unwrap();
    let e = check_overlap(&base.join("not-yet/data"), &base.join("not-yet")).unwrap_err();
    assert!(e.to_string().contains("contains"), "{e}");
}

#[test]
fn oversized_user_files_are_refused_with_size_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("token");
    std::fs::write(&f, vec![b'a'; 70_000]).unwrap();
    let e = resolve_token(f.to_str().unwrap()).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "the token file {} is 70000 bytes, more than the 65536-byte limit for a token file; point --token (or onboarding.token) at the file that holds only the token, or pass the token itself",
            f.display()
        )
    );
    let c = dir.path().join("tbot.yaml");
    std::fs::write(&c, vec![b'#'; (1 << 20) + 1]).unwrap();
    let e = BotConfig::load(&c).unwrap_err().to_string();
    assert!(
        e.contains("is 1048577 bytes, more than the 1048576-byte limit for a config file"),
        "{e}"
    );
    let e = resolve_token("/dev/zero").unwrap_err().to_string();
    assert!(e.contains("/dev/zero is more than 65536 bytes"), "{e}");
}

#[test]
fn token_from_file_or_value() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("token");
    std::fs::write(&f, "secret\n").unwrap();
    assert_eq!(
        resolve_token(f.to_str().unwrap()).unwrap().expose(),
        "secret"
    );
    assert_eq!(resolve_token("abc").unwrap().expose(), "abc");
    let e = resolve_token("/no/such/token").unwrap_err().to_string();
    assert!(e.contains("/no/such/token"), "{e}");
}

#[test]
fn several_auth_servers_as_a_list_or_a_comma_separated_string() {
    let c = BotConfig::from_yaml("auth_servers: [a:3025, b:3025, a:3025]\n").unwrap();
    c.validate().unwrap();
    assert_eq!(c.auth_addrs().unwrap().as_slice(), ["a:3025", "b:3025"]);
    let c = BotConfig::from_yaml("auth_server: a:3025,b:3025\n").unwrap();
    assert_eq!(c.auth_addrs().unwrap().as_slice(), ["a:3025", "b:3025"]);
    // The flag replaces either key; a list lands in auth_servers and round-trips.
    let mut c = BotConfig::from_yaml("auth_server: old:3025\n").unwrap();
    let changed = c.apply(Overrides {
        auth_server: Some("a:3025, b:3025".into()),
        ..Overrides::default()
    });
    assert!(changed.contains(&"auth_server"));
    assert_eq!(c.auth_server, None);
    assert_eq!(c.auth_servers, ["a:3025", "b:3025"]);
    let yaml = c.to_yaml().unwrap();
    assert!(yaml.contains("auth_servers:"), "{yaml}");
    assert_eq!(BotConfig::from_yaml(&yaml).unwrap(), c);
    let mut c = BotConfig::from_yaml("auth_servers: [a:1, b:1]\n").unwrap();
    c.apply(Overrides {
        auth_server: Some("c:1".into()),
        ..Overrides::default()
    });
    assert_eq!(
        (c.auth_server.as_deref(), c.auth_servers.len()),
        (Some("c:1"), 0)
    );
}

#[test]
fn bad_auth_server_lists_are_refused_with_the_fix() {
    let e = BotConfig::from_yaml("auth_server: a:1\nauth_servers: [b:1]\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("both auth_server and auth_servers"), "{e}");
    assert!(e.contains("keep one"), "{e}");
    let e = BotConfig::from_yaml("auth_servers: [a:1, '', b:1]\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("entry 2") && e.contains("empty"), "{e}");
    let e = BotConfig::from_yaml("auth_server: 'a:1,,b:1'\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("remove the extra comma"), "{e}");
    let e = BotConfig::from_yaml("auth_servers: [a:1, b]\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"b\" has no port"), "{e}");
    let e = BotConfig::from_yaml("auth_servers: []\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("no auth server"), "{e}");
}
