#![allow(clippy::unwrap_used)] // tests

use super::*;
use machine_id_mint::{CaKeys, Suite};
use machine_id_types::{RotationMode, RotationPhase};
use time::OffsetDateTime;

fn keys() -> CaKeys {
    CaKeys::generate("example.com", Suite::Default, OffsetDateTime::now_utc()).unwrap()
}

fn cas(keys: &CaKeys) -> Vec<CertAuthority> {
    // The server's order need not be the listing order.
    sorted(
        [CaType::Tls, CaType::User, CaType::Host]
            .into_iter()
            .map(|t| keys.cert_authority(t))
            .collect(),
    )
}

#[test]
fn standby_has_one_active_key_per_ca_in_listing_order() {
    let keys = keys();
    let rows = key_rows(&cas(&keys)).unwrap();
    let summary: Vec<_> = rows
        .iter()
        .map(|r| (r.authority, r.protocol, r.status))
        .collect();
    assert_eq!(
        summary,
        [
            (CaType::User, "SSH", "active"),
            (CaType::Host, "SSH", "active"),
            (CaType::Tls, "TLS", "active"),
        ]
    );
    assert_eq!(
        rows[0].fingerprint,
        ssh_fingerprint(&keys.user_ca_openssh()).unwrap()
    );
    assert_eq!(
        rows[2].fingerprint,
        cert_fingerprint(keys.tls_ca_cert_der())
    );
    assert_eq!(
        rows[2].pin.as_deref(),
        Some(
            CaPin::from_cert_der(keys.tls_ca_cert_der())
                .unwrap()
                .to_string()
                .as_str()
        )
    );
    assert!(
        rows[0].rotation.starts_with("standby"),
        "{}",
        rows[0].rotation
    );
}

#[test]
fn a_rotation_in_init_shows_the_new_key_as_trusted_with_the_phase() {
    let now = OffsetDateTime::now_utc();
    let keys = keys()
        .rotate(
            CaType::Tls,
            RotationPhase::Init,
            RotationMode::Manual,
            None,
            "r1",
            now,
        )
        .unwrap();
    let rows = key_rows(&cas(&keys)).unwrap();
    let tls: Vec<_> = rows.iter().filter(|r| r.authority == CaType::Tls).collect();
    assert_eq!(tls.len(), 2, "{rows:?}");
    assert_eq!((tls[0].status, tls[1].status), ("active", "trusted"));
    assert_ne!(tls[0].pin, tls[1].pin);
    assert_eq!(tls[0].rotation, "in progress (mode: manual, phase: init)");

    let text = table(&rows);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("Authority"), "{text}");
    assert_eq!(lines.len(), 2 + 4, "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("tls") && l.contains("phase: init") && l.contains("trusted")),
        "{text}"
    );

    let v = summary_json(&cas(&keys), &rows);
    assert_eq!(v[2]["authority"], "tls");
    assert_eq!(v[2]["phase"], "init");
    assert_eq!(v[2]["state"], "in_progress");
    assert_eq!(v[2]["keys"].as_array().unwrap().len(), 2);
    assert!(
        v[2]["keys"][1]["pin"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(v[0]["phase"], "standby");
}

#[test]
fn last_rotated_shows_whole_seconds() {
    let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
    let mut keys = keys();
    for p in [
        RotationPhase::Init,
        RotationPhase::UpdateClients,
        RotationPhase::UpdateServers,
        RotationPhase::Standby,
    ] {
        keys = keys
            .rotate(CaType::Host, p, RotationMode::Manual, None, "r1", at)
            .unwrap();
    }
    assert_eq!(
        describe(&keys.cert_authority(CaType::Host)),
        "standby (last rotated: 2023-11-14T22:13:20Z)"
    );
}

#[test]
fn the_yaml_of_a_ca_holds_no_private_key() {
    let keys = keys()
        .rotate(
            CaType::User,
            RotationPhase::Init,
            RotationMode::Manual,
            None,
            "r1",
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    let doc = serde_norway::to_string(&keys.cert_authority(CaType::User)).unwrap();
    assert!(doc.contains("kind: cert_authority"), "{doc}");
    assert!(doc.contains("phase: init"), "{doc}");
    assert!(!doc.contains("PRIVATE KEY"), "{doc}");
}
