//! Shared fixtures: a clock reading, an identity, CAs, and running a command.

use machine_id_mint::{CaKeys, CaSigner, Identity, PrivateKey, Suite};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use time::{Duration, OffsetDateTime};

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("whole second")
}

pub fn identity(cluster: &str, now: OffsetDateTime) -> Identity {
    Identity {
        username: "bot-robot".into(),
        roles: vec!["bot-robot".into(), "access".into(), "editor".into()],
        logins: vec!["root".into(), "ubuntu".into()],
        traits: BTreeMap::from([("logins".to_string(), vec!["root".to_string()])]),
        renewable: true,
        generation: 3,
        impersonator: None,
        disallow_reissue: false,
        cluster: cluster.into(),
        expires: now + Duration::hours(1),
    }
}

pub struct Fixture {
    pub signer: CaSigner,
    pub key: PrivateKey,
    pub now: OffsetDateTime,
}

pub fn fixture(suite: Suite) -> Fixture {
    let now = now();
    let keys = CaKeys::generate("example.com", suite, now).expect("generate cas");
    // Always through the stored form, as the auth server does.
    let keys = CaKeys::from_bytes(&keys.to_bytes()).expect("stored cas");
    Fixture {
        signer: keys.signer().expect("signer"),
        key: PrivateKey::generate(suite).expect("subject key"),
        now,
    }
}

/// Writes `contents` to `dir/name` with mode 0600 (OpenSSH refuses readable keys).
pub fn write(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// Runs a command; returns stdout+stderr and whether it succeeded.
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Runs a command that must succeed; returns its output.
pub fn run_ok(cmd: &mut Command) -> String {
    let dbg = format!("{cmd:?}");
    let (ok, text) = run(cmd);
    assert!(ok, "{dbg} failed:\n{text}");
    text
}
