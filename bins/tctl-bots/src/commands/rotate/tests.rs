#![allow(clippy::unwrap_used)] // tests

use super::*;
use machine_id_mint::{CaKeys, Suite};
use machine_id_types::RotationMode;
use time::OffsetDateTime;

fn args(kind: Option<&str>, phase: Option<&str>, manual: bool, grace: Option<&str>) -> RotateArgs {
    RotateArgs {
        kind: kind.map(str::to_string),
        phase: phase.map(str::to_string),
        manual,
        grace_period: grace.map(str::to_string),
        yes: false,
        format: Format::Text,
    }
}

fn refused(a: RotateArgs) -> FlagError {
    check(&a).expect_err("refused")
}

#[test]
fn a_manual_phase_and_an_automatic_start_are_accepted() {
    let plan = check(&args(Some("all"), Some("init"), true, None)).unwrap();
    assert_eq!(plan.types, CaType::ALL.to_vec());
    assert_eq!(
        plan.request,
        RotateRequest {
            ca_type: "all".into(),
            phase: Some(RotationPhase::Init),
            manual: true,
            grace_period: None,
        }
    );
    let plan = check(&args(Some("user"), None, false, Some("48h"))).unwrap();
    assert_eq!(plan.types, [CaType::User]);
    assert_eq!(plan.request.phase, None);
    assert!(!plan.request.manual);
    assert_eq!(
        plan.request.grace_period,
        Some(Duration::from_secs(48 * 3600))
    );
    assert!(!plan.is_forced());
    let forced = check(&args(Some("tls"), None, false, Some("0"))).unwrap();
    assert!(forced.is_forced());
}

#[test]
fn every_flag_mistake_names_the_allowed_values() {
    let e = refused(args(None, Some("init"), true, None));
    assert!(e.message.contains("--type is required"), "{e}");
    assert!(e.message.contains("user, host, tls or all"), "{e}");

    let e = refused(args(Some("db"), Some("init"), true, None));
    assert!(e.message.contains("\"db\""), "{e}");
    assert!(e.message.contains("user, host, tls or all"), "{e}");

    let e = refused(args(Some("user"), Some("finish"), true, None));
    assert!(e.message.contains("\"finish\""), "{e}");
    assert!(e.message.contains(PHASES), "{e}");
    assert_eq!(
        e.show_phases_of,
        [CaType::User],
        "the server is asked for the phase"
    );

    let e = refused(args(Some("user"), Some("update-clients"), true, None));
    assert!(
        e.message.contains("did you mean --phase=update_clients?"),
        "{e}"
    );

    let e = refused(args(Some("user"), Some("init"), false, None));
    assert!(e.message.contains("needs --manual"), "{e}");
    assert!(e.message.contains("--grace-period"), "{e}");

    let e = refused(args(Some("user"), Some("init"), true, Some("1h")));
    assert!(e.message.contains("do not go together"), "{e}");

    let e = refused(args(Some("user"), None, true, None));
    assert!(e.message.contains("--manual needs --phase"), "{e}");
    assert!(e.message.contains(PHASES), "{e}");

    let e = refused(args(Some("user"), None, false, None));
    assert!(e.message.contains("--manual --phase=PHASE"), "{e}");
    assert!(e.message.contains("--grace-period=DUR"), "{e}");

    let e = refused(args(Some("user"), None, false, Some("soon")));
    assert!(e.message.contains("--grace-period"), "{e}");
    assert!(e.message.contains("48h"), "{e}");
    for e in [
        refused(args(Some("user"), Some("init"), false, None)),
        refused(args(None, None, false, None)),
    ] {
        assert!(e.show_phases_of.is_empty(), "{e}");
    }
}

fn keys_in(phase: RotationPhase, mode: RotationMode, grace: Option<Duration>) -> CaKeys {
    let now = OffsetDateTime::now_utc();
    let mut keys = CaKeys::generate("example.com", Suite::Default, now).unwrap();
    let path: &[RotationPhase] = match phase {
        RotationPhase::Init => &[RotationPhase::Init],
        RotationPhase::UpdateServers => &[
            RotationPhase::Init,
            RotationPhase::UpdateClients,
            RotationPhase::UpdateServers,
        ],
        _ => &[],
    };
    for t in CaType::ALL {
        for p in path {
            keys = keys.rotate(t, *p, mode, grace, "r1", now).unwrap();
        }
    }
    keys
}

fn all_cas(keys: &CaKeys) -> Vec<CertAuthority> {
    CaType::ALL
        .into_iter()
        .rev()
        .map(|t| keys.cert_authority(t))
        .collect()
}

#[test]
fn the_report_names_the_phase_and_the_next_step_per_ca() {
    let plan = check(&args(Some("all"), Some("init"), true, None)).unwrap();
    let keys = keys_in(RotationPhase::Init, RotationMode::Manual, None);
    let text = report(&plan, &all_cas(&keys));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "Updated rotation phase to \"init\". To check status use 'tctl status'"
    );
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(
        lines[1],
        format!(
            "user CA (init): {}",
            RotationPhase::Init.next_step_hint(CaType::User)
        )
    );
    assert!(lines[2].starts_with("host CA (init): "), "{text}");
    assert!(lines[3].starts_with("tls CA (init): "), "{text}");

    // Only the CA types asked for are reported.
    let plan = check(&args(Some("host"), Some("update_servers"), true, None)).unwrap();
    let keys = keys_in(RotationPhase::UpdateServers, RotationMode::Manual, None);
    let text = report(&plan, &all_cas(&keys));
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("tctl auth sign"), "{text}");
}

#[test]
fn an_automatic_start_reports_the_schedule() {
    let plan = check(&args(Some("all"), None, false, Some("90m"))).unwrap();
    let keys = keys_in(
        RotationPhase::Init,
        RotationMode::Auto,
        Some(Duration::from_secs(90 * 60)),
    );
    let text = report(&plan, &all_cas(&keys));
    assert!(
        text.starts_with(
            "Started an automatic rotation of the user, host and tls CAs (grace period 1h30m"
        ),
        "{text}"
    );
    let s = keys.rotation(CaType::User).schedule.unwrap();
    assert!(
        text.contains(&format!("update_clients at {}", rfc3339(s.update_clients))),
        "{text}"
    );
    assert!(
        text.contains(&format!("standby at {}", rfc3339(s.standby))),
        "{text}"
    );
    assert!(
        text.contains("user CA (init): install the new user CA"),
        "{text}"
    );
}

#[test]
fn a_forced_rotation_says_what_must_be_redone() {
    let plan = check(&args(Some("tls"), None, false, Some("0"))).unwrap();
    let keys = keys_in(RotationPhase::Standby, RotationMode::Manual, None);
    let text = report(&plan, &all_cas(&keys));
    assert!(
        text.starts_with("Replaced the keys of the tls CA at once"),
        "{text}"
    );
    assert!(text.contains("join again with a new token"), "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
fn phases_text_names_the_current_and_next_phases() {
    let keys = keys_in(RotationPhase::Init, RotationMode::Manual, None);
    let text = phases_text(&[keys.cert_authority(CaType::User)]);
    assert_eq!(
        text,
        "the user CA is in phase init (next: update_clients or rollback)"
    );
    assert_eq!(names(&[CaType::User, CaType::Tls]), "user and tls");
}
