#![allow(clippy::unwrap_used)] // tests

use super::*;
use machine_id_mint::{CaKeys, Suite, cert_der_to_pem};
use machine_id_types::{CaPublicKeys, Rotation};

/// One generation of a cluster's keys.
struct Keys(CaKeys);

impl Keys {
    fn new() -> Self {
        Self(
            CaKeys::generate(
                "example.com",
                Suite::Default,
                time::OffsetDateTime::now_utc(),
            )
            .unwrap(),
        )
    }

    fn public(&self, ca: CaType) -> CaPublicKeys {
        match ca {
            CaType::User => CaPublicKeys {
                ssh: vec![self.0.user_ca_openssh()],
                tls: vec![],
            },
            CaType::Host => CaPublicKeys {
                ssh: vec![self.0.host_ca_openssh()],
                tls: vec![],
            },
            CaType::Tls => CaPublicKeys {
                ssh: vec![],
                tls: vec![cert_der_to_pem(self.0.tls_ca_cert_der())],
            },
        }
    }
}

/// The cluster's CAs in `phase`, signing with `active` and trusting `additional` besides.
fn cluster(phase: RotationPhase, active: &Keys, additional: Option<&Keys>) -> Vec<CertAuthority> {
    CaType::ALL
        .into_iter()
        .map(|ca| {
            let rotation = Rotation {
                phase,
                ..Rotation::default()
            };
            CertAuthority::new(
                "example.com",
                ca,
                active.public(ca),
                additional.map(|k| k.public(ca)).unwrap_or_default(),
                rotation,
            )
        })
        .collect()
}

/// What a renewal from a server trusting `sets` gives the bot (user CAs, then host CAs).
fn held(sets: &[&Keys]) -> TrustedKeys {
    let mut ssh: Vec<String> = sets
        .iter()
        .map(|k| format!("{} user-ca", k.0.user_ca_openssh()))
        .collect();
    ssh.extend(sets.iter().map(|k| k.0.host_ca_openssh()));
    TrustedKeys::of_certs(&Certs {
        ssh_cert: String::new(),
        tls_cert: Vec::new(),
        tls_ca_certs: sets
            .iter()
            .map(|k| k.0.tls_ca_cert_der().to_vec())
            .collect(),
        ssh_ca_keys: ssh,
    })
}

#[test]
fn a_whole_rotation_renews_at_init_update_clients_and_standby_only() {
    use RotationPhase::*;
    let old = Keys::new();
    let new = Keys::new();
    let mut judge = Judge::default();

    // Standby, and the bot holds the cluster's keys (comments aside): nothing to do.
    let v = judge.judge(&cluster(Standby, &old, None), &[held(&[&old])]);
    assert_eq!(v.renew, None);
    assert!(v.entered.is_empty());

    // init: new keys are trusted that the bot does not hold.
    let v = judge.judge(&cluster(Init, &old, Some(&new)), &[held(&[&old])]);
    let why = v.renew.unwrap();
    assert!(
        why.contains("other CA keys") && why.contains("tls in init"),
        "{why}"
    );
    assert_eq!(v.entered.len(), 3);

    // The same set again (a re-opened watch) before the renewal landed: asked once only.
    let v = judge.judge(&cluster(Init, &old, Some(&new)), &[held(&[&old])]);
    assert_eq!(v.renew, None);

    // update_clients: the keys the bot holds match, but the signing keys changed.
    let both = held(&[&old, &new]);
    let v = judge.judge(
        &cluster(UpdateClients, &new, Some(&old)),
        &[both.clone(), both.clone()],
    );
    assert_eq!(
        v.renew.as_deref(),
        Some("user, host, tls entered update_clients")
    );

    // update_servers: only what servers present changes, which the bot trusts already.
    let v = judge.judge(
        &cluster(UpdateServers, &new, Some(&old)),
        std::slice::from_ref(&both),
    );
    assert_eq!(v.renew, None);
    assert_eq!(v.entered, CaType::ALL.map(|c| (c, UpdateServers)).to_vec());

    // standby: the old keys are dropped.
    let v = judge.judge(&cluster(Standby, &new, None), &[both]);
    assert_eq!(v.renew.as_deref(), Some("user, host, tls entered standby"));

    // After the renewal the bot holds exactly the new keys.
    let v = judge.judge(&cluster(Standby, &new, None), &[held(&[&new])]);
    assert_eq!(v.renew, None);
}

#[test]
fn a_bot_that_starts_or_reconnects_mid_rotation_catches_up() {
    use RotationPhase::*;
    let old = Keys::new();
    let new = Keys::new();
    // First message ever, in update_servers: no phase entry to see, but the keys differ.
    let mut judge = Judge::default();
    let v = judge.judge(&cluster(UpdateServers, &new, Some(&old)), &[held(&[&old])]);
    assert!(v.renew.unwrap().contains("tls in update_servers"));

    // One output out of date is enough.
    let mut judge = Judge::default();
    let v = judge.judge(
        &cluster(Standby, &new, None),
        &[held(&[&new]), held(&[&old, &new])],
    );
    assert!(v.renew.is_some());
}

#[test]
fn a_rollback_renews_and_its_standby_too() {
    use RotationPhase::*;
    let old = Keys::new();
    let new = Keys::new();
    let both = held(&[&old, &new]);
    let mut judge = Judge::default();
    judge.judge(
        &cluster(UpdateServers, &new, Some(&old)),
        std::slice::from_ref(&both),
    );
    let v = judge.judge(
        &cluster(Rollback, &old, Some(&new)),
        std::slice::from_ref(&both),
    );
    assert_eq!(v.renew.as_deref(), Some("user, host, tls entered rollback"));
    let v = judge.judge(&cluster(Standby, &old, None), &[both]);
    assert_eq!(v.renew.as_deref(), Some("user, host, tls entered standby"));
}

#[test]
fn entries_are_grouped_by_phase() {
    use RotationPhase::*;
    assert_eq!(
        describe_entries(&[
            (CaType::User, UpdateClients),
            (CaType::Tls, Init),
            (CaType::Host, UpdateClients)
        ]),
        "user, host entered update_clients; tls entered init"
    );
}

#[test]
fn the_watch_health_reads_for_people() {
    let h = WatchHealth::default();
    assert_eq!((h.up(), h.describe()), (None, None));
    h.set(WatchState::Watching);
    assert_eq!(h.up(), Some(true));
    h.set(WatchState::Reconnecting {
        error: "cannot reach the auth server".into(),
    });
    assert_eq!(h.up(), Some(false));
    let line = h.describe().unwrap();
    assert!(
        line.contains("reconnecting (cannot reach the auth server)")
            && line.contains("still renews"),
        "{line}"
    );
}
