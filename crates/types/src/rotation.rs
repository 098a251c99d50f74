//! CA rotation: the phases a certificate authority moves through when its keys are replaced,
//! and the rules for moving between them. Pure: the key material each step needs is
//! `machine-id-mint`'s, the compare-and-swap that makes a step happen exactly once is the auth
//! server's.
//!
//! A rotation of one CA type walks `standby → init → update_clients → update_servers →
//! standby`:
//!
//! | phase | signing keys | trusted keys | who acts |
//! |---|---|---|---|
//! | `init` | old | old + new | operators install the new user CA on OpenSSH nodes |
//! | `update_clients` | new | new + old | bots renew and get certificates from the new CA |
//! | `update_servers` | new | new + old | servers present certificates from the new CA; re-sign OpenSSH host certificates |
//! | `standby` | new | new | old keys dropped |
//!
//! `rollback` is allowed from `init`, `update_clients` and `update_servers`: the old keys sign
//! again (the new ones stay trusted until `standby` drops them), and the mode becomes manual.
//!
//! ```
//! use machine_id_types::{Rotation, RotationPhase, RotationMode, KeyStep};
//! let now = time::OffsetDateTime::UNIX_EPOCH;
//! let (r, step) = Rotation::default()
//!     .advance(RotationPhase::Init, RotationMode::Manual, None, "id-1", now)
//!     .unwrap();
//! assert_eq!(step, KeyStep::AddNewKeys);
//! assert!(r.advance(RotationPhase::Standby, RotationMode::Manual, None, "id-2", now).is_err());
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;

/// One of the cluster's certificate authorities, as `tctl auth rotate --type` and
/// `tctl auth export --type` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaType {
    /// The SSH user CA: signs bots' SSH certificates; sshd trusts it.
    User,
    /// The SSH host CA: signs nodes' host certificates; clients trust it in `known_hosts`.
    Host,
    /// The TLS CA: signs X.509 client and server certificates.
    Tls,
}

impl CaType {
    /// Every CA type, in the order listings show them.
    pub const ALL: [CaType; 3] = [CaType::User, CaType::Host, CaType::Tls];

    /// The name (`user`, `host`, `tls`).
    pub fn as_str(self) -> &'static str {
        match self {
            CaType::User => "user",
            CaType::Host => "host",
            CaType::Tls => "tls",
        }
    }

    /// The CA types `--type=NAME` selects: one, or every one for `all`.
    pub fn parse_selection(name: &str) -> Result<Vec<CaType>, RotationError> {
        if name.trim() == "all" {
            return Ok(Self::ALL.to_vec());
        }
        Ok(vec![name.parse()?])
    }
}

impl fmt::Display for CaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CaType {
    type Err = RotationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "user" => Ok(CaType::User),
            "host" => Ok(CaType::Host),
            "tls" => Ok(CaType::Tls),
            other => Err(RotationError::UnknownCaType(other.to_string())),
        }
    }
}

/// Where a rotation is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationPhase {
    /// No rotation, or the last one finished: one set of keys.
    #[default]
    Standby,
    /// New keys exist and are trusted; the old ones still sign.
    Init,
    /// The new keys sign; the old ones stay trusted.
    UpdateClients,
    /// Servers present certificates from the new keys; the old ones stay trusted.
    UpdateServers,
    /// The old keys sign again; the new ones stay trusted until `standby` drops them.
    Rollback,
}

impl RotationPhase {
    /// Every phase, in rotation order, `rollback` last.
    pub const ALL: [RotationPhase; 5] = [
        RotationPhase::Standby,
        RotationPhase::Init,
        RotationPhase::UpdateClients,
        RotationPhase::UpdateServers,
        RotationPhase::Rollback,
    ];

    /// The name (`standby`, `init`, `update_clients`, `update_servers`, `rollback`).
    pub fn as_str(self) -> &'static str {
        match self {
            RotationPhase::Standby => "standby",
            RotationPhase::Init => "init",
            RotationPhase::UpdateClients => "update_clients",
            RotationPhase::UpdateServers => "update_servers",
            RotationPhase::Rollback => "rollback",
        }
    }

    /// The phases a rotation may move to from this one.
    pub fn allowed_next(self) -> &'static [RotationPhase] {
        use RotationPhase::*;
        match self {
            Standby => &[Init],
            Init => &[UpdateClients, Rollback],
            UpdateClients => &[UpdateServers, Rollback],
            UpdateServers => &[Standby, Rollback],
            Rollback => &[Standby],
        }
    }

    /// Whether clients (bots) must renew when a CA enters this phase: the signing keys or
    /// the trusted set changed for them. Entering `init` adds a key nobody uses yet and
    /// `update_servers` changes only what servers present, which clients already trust.
    pub fn clients_renew_on_entry(self) -> bool {
        matches!(
            self,
            RotationPhase::UpdateClients | RotationPhase::Rollback | RotationPhase::Standby
        )
    }

    /// What the operator does while a CA is in this phase, before the next one.
    pub fn next_step_hint(self, ca: CaType) -> &'static str {
        use RotationPhase::*;
        match (self, ca) {
            (Standby, _) => "nothing: the rotation is complete",
            (Init, CaType::User) => {
                "install the new user CA on every OpenSSH node (tctl auth export --type=user > the TrustedUserCAKeys file) before update_clients"
            }
            (Init, _) => {
                "check that every server and bot can reach the cluster, then move to update_clients"
            }
            (UpdateClients, CaType::Host) => {
                "wait until every bot has renewed (its known_hosts lists both host CAs), then move to update_servers"
            }
            (UpdateClients, _) => {
                "wait until every bot has renewed (tbot renews on its own within seconds), then move to update_servers"
            }
            (UpdateServers, CaType::Host) => {
                "re-sign every OpenSSH node's host certificate (tctl auth sign --host=NAME) before standby"
            }
            (UpdateServers, _) => "check that logins and renewals work, then move to standby",
            (Rollback, CaType::Host) => {
                "re-sign host certificates signed during the rotation (tctl auth sign) before standby"
            }
            (Rollback, _) => "wait until every bot has renewed, then move to standby",
        }
    }
}

impl fmt::Display for RotationPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RotationPhase {
    type Err = RotationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s.trim())
            .ok_or_else(|| RotationError::UnknownPhase(s.to_string()))
    }
}

/// Whether a rotation is running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationState {
    /// No rotation is running.
    #[default]
    Standby,
    /// A rotation is running (any phase but `standby`).
    InProgress,
}

impl RotationState {
    /// The name (`standby`, `in_progress`).
    pub fn as_str(self) -> &'static str {
        match self {
            RotationState::Standby => "standby",
            RotationState::InProgress => "in_progress",
        }
    }
}

/// Who moves a rotation from phase to phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationMode {
    /// An operator, with `tctl auth rotate --manual --phase=...`.
    #[default]
    Manual,
    /// The auth servers, at thirds of the grace period ([`RotationSchedule`]).
    Auto,
}

impl RotationMode {
    /// The name (`manual`, `auto`).
    pub fn as_str(self) -> &'static str {
        match self {
            RotationMode::Manual => "manual",
            RotationMode::Auto => "auto",
        }
    }
}

/// When an automatic rotation enters each later phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationSchedule {
    /// Entry into `update_clients`: a third of the grace period after the start.
    #[serde(with = "time::serde::rfc3339")]
    pub update_clients: OffsetDateTime,
    /// Entry into `update_servers`: two thirds.
    #[serde(with = "time::serde::rfc3339")]
    pub update_servers: OffsetDateTime,
    /// Entry into `standby`: the whole grace period.
    #[serde(with = "time::serde::rfc3339")]
    pub standby: OffsetDateTime,
}

impl RotationSchedule {
    /// The schedule of a rotation started at `started` with `grace_period`.
    pub fn new(started: OffsetDateTime, grace_period: Duration) -> Self {
        let third = time::Duration::try_from(grace_period / 3).unwrap_or(time::Duration::MAX);
        let whole = time::Duration::try_from(grace_period).unwrap_or(time::Duration::MAX);
        let at = |d: time::Duration| started.checked_add(d).unwrap_or(started);
        Self {
            update_clients: at(third),
            update_servers: at(third * 2),
            standby: at(whole),
        }
    }

    /// The phase an automatic rotation in `phase` should move to at `now`, if its time has
    /// come.
    pub fn due(&self, phase: RotationPhase, now: OffsetDateTime) -> Option<RotationPhase> {
        let (next, at) = match phase {
            RotationPhase::Init => (RotationPhase::UpdateClients, self.update_clients),
            RotationPhase::UpdateClients => (RotationPhase::UpdateServers, self.update_servers),
            RotationPhase::UpdateServers => (RotationPhase::Standby, self.standby),
            RotationPhase::Standby | RotationPhase::Rollback => return None,
        };
        (now >= at).then_some(next)
    }
}

/// The rotation status of one CA (`spec.rotation` of a `cert_authority` resource).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// Whether a rotation is running.
    #[serde(default)]
    pub state: RotationState,
    /// The phase.
    #[serde(default)]
    pub phase: RotationPhase,
    /// Who moves it on.
    #[serde(default)]
    pub mode: RotationMode,
    /// A unique id of the running rotation; empty in standby.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_id: String,
    /// When the running rotation started.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub started: Option<OffsetDateTime>,
    /// The grace period of the running rotation.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_opt"
    )]
    pub grace_period: Option<Duration>,
    /// When the last rotation completed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub last_rotated: Option<OffsetDateTime>,
    /// When an automatic rotation enters its later phases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<RotationSchedule>,
}

/// What a phase change does to a CA's keys (the key material is `machine-id-mint`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStep {
    /// Nothing (the phase alone changes).
    None,
    /// Generate new keys and add them to the trusted keys (`init`).
    AddNewKeys,
    /// The trusted keys sign and the signing keys become trusted only (`update_clients`, and
    /// `rollback` from `update_clients` or `update_servers`).
    Swap,
    /// Drop the keys that are only trusted (`standby`).
    DropTrusted,
    /// Replace the signing keys with new ones at once and trust nothing else (a rotation
    /// with a zero grace period: every certificate issued before must be issued again).
    Replace,
}

impl Rotation {
    /// Computes the status after a move to `to`, and what must happen to the keys. `mode` and
    /// `grace_period` matter only when a rotation starts (`init`); a grace period of zero
    /// there is a forced rotation, straight back to standby with new keys. `id` names a
    /// rotation that starts.
    ///
    /// # Errors
    ///
    /// [`RotationError::IllegalTransition`] when `to` does not follow the current phase
    /// (naming the phase and the allowed next ones), and
    /// [`RotationError::InProgress`] for a second `init`.
    pub fn advance(
        &self,
        to: RotationPhase,
        mode: RotationMode,
        grace_period: Option<Duration>,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<(Rotation, KeyStep), RotationError> {
        use RotationPhase::*;
        let from = self.phase;
        if to == Init && self.state == RotationState::InProgress {
            return Err(RotationError::InProgress {
                phase: from,
                allowed: from.allowed_next(),
            });
        }
        if !from.allowed_next().contains(&to) {
            return Err(RotationError::IllegalTransition {
                from,
                to,
                allowed: from.allowed_next(),
            });
        }
        let mut next = self.clone();
        next.phase = to;
        let step = match to {
            Init => {
                if grace_period == Some(Duration::ZERO) {
                    return Ok((
                        Rotation {
                            last_rotated: Some(now),
                            ..Rotation::default()
                        },
                        KeyStep::Replace,
                    ));
                }
                next.state = RotationState::InProgress;
                next.mode = mode;
                next.current_id = id.to_string();
                next.started = Some(now);
                next.grace_period = grace_period;
                next.schedule = match (mode, grace_period) {
                    (RotationMode::Auto, Some(g)) => Some(RotationSchedule::new(now, g)),
                    _ => None,
                };
                KeyStep::AddNewKeys
            }
            UpdateClients => KeyStep::Swap,
            UpdateServers => KeyStep::None,
            Rollback => {
                next.mode = RotationMode::Manual;
                next.schedule = None;
                if from == Init {
                    KeyStep::None
                } else {
                    KeyStep::Swap
                }
            }
            Standby => {
                let completed = from == UpdateServers;
                next = Rotation {
                    last_rotated: if completed {
                        Some(now)
                    } else {
                        self.last_rotated
                    },
                    ..Rotation::default()
                };
                KeyStep::DropTrusted
            }
        };
        Ok((next, step))
    }

    /// One line for `tctl status`: `standby (last rotated: ...)` or
    /// `in progress (mode: manual, phase: init)`.
    pub fn describe(&self) -> String {
        match self.state {
            RotationState::Standby => match self.last_rotated {
                Some(t) => format!(
                    "standby (last rotated: {})",
                    t.format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_else(|_| t.to_string())
                ),
                None => "standby (never rotated)".to_string(),
            },
            RotationState::InProgress => format!(
                "in progress (mode: {}, phase: {})",
                self.mode.as_str(),
                self.phase.as_str()
            ),
        }
    }
}

/// The public keys of one CA set: OpenSSH lines for the SSH CAs, PEM certificates for the
/// TLS CA.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaPublicKeys {
    /// SSH CA public keys, OpenSSH lines (user and host CAs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<String>,
    /// TLS CA certificates, PEM (the TLS CA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<String>,
}

/// The public view of one of the cluster's CAs, as `tctl get cert_authorities` shows it: the
/// keys that sign, the keys that are trusted besides, and the rotation status. Never holds a
/// private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertAuthority {
    /// Always `cert_authority`.
    pub kind: String,
    /// The CA type (`user`, `host`, `tls`).
    pub sub_kind: CaType,
    /// Always `v2`.
    pub version: String,
    /// The name is the cluster's.
    pub metadata: crate::Metadata,
    /// Keys and rotation.
    pub spec: CertAuthoritySpec,
}

/// [`CertAuthority`]'s `spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertAuthoritySpec {
    /// The cluster.
    pub cluster_name: String,
    /// The CA type.
    #[serde(rename = "type")]
    pub ca_type: CaType,
    /// The keys that sign (one set).
    pub active_keys: CaPublicKeys,
    /// Keys trusted besides the active ones (during a rotation, the other set).
    #[serde(default)]
    pub additional_trusted_keys: CaPublicKeys,
    /// The rotation status.
    #[serde(default)]
    pub rotation: Rotation,
}

impl CertAuthority {
    /// The view of CA `ca_type` of `cluster_name`.
    pub fn new(
        cluster_name: &str,
        ca_type: CaType,
        active_keys: CaPublicKeys,
        additional_trusted_keys: CaPublicKeys,
        rotation: Rotation,
    ) -> Self {
        Self {
            kind: "cert_authority".into(),
            sub_kind: ca_type,
            version: "v2".into(),
            metadata: crate::Metadata {
                name: cluster_name.to_string(),
                ..Default::default()
            },
            spec: CertAuthoritySpec {
                cluster_name: cluster_name.to_string(),
                ca_type,
                active_keys,
                additional_trusted_keys,
                rotation,
            },
        }
    }
}

fn list(phases: &[RotationPhase]) -> String {
    phases
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A rotation request that cannot be carried out; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RotationError {
    /// `--type` names no CA.
    #[error("unknown CA type {0:?}; use user, host, tls or all")]
    UnknownCaType(String),
    /// `--phase` names no phase.
    #[error(
        "unknown rotation phase {0:?}; use init, update_clients, update_servers, standby or rollback"
    )]
    UnknownPhase(String),
    /// A phase that does not follow the current one.
    #[error(
        "cannot move from phase {from} to {to}; from {from} the next phase is one of: {}",
        list(allowed)
    )]
    IllegalTransition {
        /// The current phase.
        from: RotationPhase,
        /// The phase asked for.
        to: RotationPhase,
        /// The phases allowed next.
        allowed: &'static [RotationPhase],
    },
    /// `init` while a rotation runs.
    #[error(
        "a rotation is already in progress (phase {phase}); finish it (the next phase is one of: {}) before starting another",
        list(allowed)
    )]
    InProgress {
        /// The current phase.
        phase: RotationPhase,
        /// The phases allowed next.
        allowed: &'static [RotationPhase],
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use RotationPhase::*;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(s).expect("time")
    }

    fn walk(r: &Rotation, to: RotationPhase) -> (Rotation, KeyStep) {
        r.advance(to, RotationMode::Manual, None, "r1", at(100))
            .unwrap_or_else(|e| panic!("{to}: {e}"))
    }

    #[test]
    fn a_full_rotation_swaps_then_drops_and_records_completion() {
        let r = Rotation::default();
        let (r, s) = walk(&r, Init);
        assert_eq!(
            (r.state, s),
            (RotationState::InProgress, KeyStep::AddNewKeys)
        );
        assert_eq!(r.current_id, "r1");
        let (r, s) = walk(&r, UpdateClients);
        assert_eq!(s, KeyStep::Swap);
        let (r, s) = walk(&r, UpdateServers);
        assert_eq!(s, KeyStep::None);
        let (r, s) = walk(&r, Standby);
        assert_eq!(s, KeyStep::DropTrusted);
        assert_eq!(r.state, RotationState::Standby);
        assert_eq!(r.last_rotated, Some(at(100)));
        assert!(r.current_id.is_empty() && r.started.is_none() && r.schedule.is_none());
    }

    #[test]
    fn rollback_swaps_back_except_from_init_and_forces_manual() {
        let (r, _) = Rotation::default()
            .advance(
                Init,
                RotationMode::Auto,
                Some(Duration::from_secs(90)),
                "a",
                at(0),
            )
            .expect("init");
        assert!(r.schedule.is_some());
        let (rb, s) = walk(&r, Rollback);
        assert_eq!(
            (s, rb.mode, rb.schedule),
            (KeyStep::None, RotationMode::Manual, None)
        );
        let (uc, _) = walk(&r, UpdateClients);
        let (rb, s) = walk(&uc, Rollback);
        assert_eq!(s, KeyStep::Swap);
        let (us, _) = walk(&uc, UpdateServers);
        assert_eq!(walk(&us, Rollback).1, KeyStep::Swap);
        let (done, s) = walk(&rb, Standby);
        assert_eq!(s, KeyStep::DropTrusted);
        assert_eq!(
            done.last_rotated, None,
            "a rolled-back rotation did not rotate"
        );
    }

    #[test]
    fn every_illegal_transition_names_the_phase_and_the_allowed_ones() {
        let mut states = vec![(Standby, Rotation::default())];
        let (init, _) = walk(&Rotation::default(), Init);
        let (uc, _) = walk(&init, UpdateClients);
        let (us, _) = walk(&uc, UpdateServers);
        let (rb, _) = walk(&uc, Rollback);
        states.extend([
            (Init, init),
            (UpdateClients, uc),
            (UpdateServers, us),
            (Rollback, rb),
        ]);
        for (phase, r) in &states {
            for to in RotationPhase::ALL {
                let res = r.advance(to, RotationMode::Manual, None, "x", at(1));
                if phase.allowed_next().contains(&to) {
                    assert!(res.is_ok(), "{phase} -> {to}");
                    continue;
                }
                let e = res.expect_err("illegal").to_string();
                assert!(e.contains(phase.as_str()), "{e}");
                for a in phase.allowed_next() {
                    assert!(e.contains(a.as_str()), "{e}");
                }
            }
        }
        let e = walk(&Rotation::default(), Init)
            .0
            .advance(Init, RotationMode::Manual, None, "y", at(2))
            .expect_err("second init")
            .to_string();
        assert!(e.contains("already in progress"), "{e}");
        let e = Rotation::default()
            .advance(Standby, RotationMode::Manual, None, "y", at(2))
            .expect_err("standby from standby")
            .to_string();
        assert!(e.contains("init"), "{e}");
    }

    #[test]
    fn a_zero_grace_period_replaces_the_keys_at_once() {
        let (r, s) = Rotation::default()
            .advance(Init, RotationMode::Auto, Some(Duration::ZERO), "z", at(5))
            .expect("forced");
        assert_eq!(s, KeyStep::Replace);
        assert_eq!(
            (r.state, r.phase, r.last_rotated),
            (RotationState::Standby, Standby, Some(at(5)))
        );
    }

    #[test]
    fn the_schedule_splits_the_grace_period_in_thirds() {
        let s = RotationSchedule::new(at(0), Duration::from_secs(90));
        assert_eq!(
            (s.update_clients, s.update_servers, s.standby),
            (at(30), at(60), at(90))
        );
        assert_eq!(s.due(Init, at(29)), None);
        assert_eq!(s.due(Init, at(30)), Some(UpdateClients));
        assert_eq!(s.due(UpdateClients, at(61)), Some(UpdateServers));
        assert_eq!(s.due(UpdateServers, at(90)), Some(Standby));
        assert_eq!(s.due(Rollback, at(1000)), None);
    }

    #[test]
    fn names_round_trip_and_all_selects_every_type() {
        for p in RotationPhase::ALL {
            assert_eq!(p.as_str().parse::<RotationPhase>().expect("phase"), p);
        }
        assert_eq!(
            CaType::parse_selection("all").expect("all"),
            CaType::ALL.to_vec()
        );
        assert_eq!(
            CaType::parse_selection("host").expect("host"),
            vec![CaType::Host]
        );
        assert!(
            CaType::parse_selection("db")
                .expect_err("db")
                .to_string()
                .contains("user, host, tls or all")
        );
        let r = walk(&Rotation::default(), Init).0;
        let json = serde_json::to_string(&r).expect("json");
        assert!(json.contains("\"phase\":\"init\""), "{json}");
        assert_eq!(serde_json::from_str::<Rotation>(&json).expect("back"), r);
    }
}
