//! CA rotation (RotateCA), the CAs' public view (GetCertAuthorities, WatchCertAuthorities),
//! and the automatic advance of rotations whose schedule is due.
//!
//! Every phase change reads the stored CAs from the store itself (never the cache), computes
//! the next key material with `machine_id_mint::CaKeys::rotate`, and writes it back with one
//! compare-and-swap on [`state::CA_KEY`]: all CA types of one request move together or not
//! at all, a server killed mid-change leaves the old phase or the new one whole, and of
//! several auth servers racing to make the same automatic move exactly one wins (the losers
//! re-read, see the phase already moved and do nothing). The audit events of a change (one
//! per CA type) commit in the same write, so a change is never in force without them.

use std::time::Duration;

use machine_id_mint::CaKeys;
use machine_id_store::{Op, Revision, StoreError};
use machine_id_types::{
    CaType, CertAuthority, RotationMode, RotationPhase, RotationState, event_types,
};
use serde_json::json;

use super::{Caller, Core};
use crate::error::{AuthError, Result};
use crate::rbac::{Verb, kind};
use crate::state::CA_KEY;

/// How many times a phase change is tried when another writer changed the CAs meanwhile.
const CAS_ATTEMPTS: usize = 5;

/// A RotateCA request.
#[derive(Debug, Clone)]
pub(crate) struct RotateCa {
    /// `user`, `host`, `tls` or `all`.
    pub ca_type: String,
    /// The phase to move to; `None` starts an automatic rotation.
    pub phase: Option<RotationPhase>,
    /// Manual mode.
    pub manual: bool,
    /// The grace period; `None` for the default of the mode.
    pub grace_period: Option<Duration>,
}

/// One phase change to make.
struct Move {
    types: Vec<CaType>,
    to: RotationPhase,
    mode: RotationMode,
    grace_period: Option<Duration>,
    /// Who asked: a user name, or the server for automatic moves.
    by: String,
}

impl Core {
    /// RotateCA: moves the CAs of a type (or all) to a phase, or starts an automatic
    /// rotation; returns the moved CAs.
    pub async fn rotate_ca(&self, caller: &Caller, req: RotateCa) -> Result<Vec<CertAuthority>> {
        self.authorize(caller, "RotateCA", kind::CERT_AUTHORITY, Verb::Update)
            .await?;
        let types = CaType::parse_selection(&req.ca_type)
            .map_err(|e| AuthError::InvalidArgument(e.to_string()))?;
        let (to, mode, grace_period) = match (req.phase, req.manual) {
            (Some(phase), _) => (phase, RotationMode::Manual, req.grace_period),
            (None, true) => {
                return Err(AuthError::InvalidArgument(
                    "a manual rotation names the phase to move to (--phase=init|update_clients|update_servers|standby|rollback)".into(),
                ));
            }
            (None, false) => (
                RotationPhase::Init,
                RotationMode::Auto,
                Some(
                    req.grace_period
                        .unwrap_or(self.limits.default_rotation_grace_period),
                ),
            ),
        };
        if to != RotationPhase::Init && req.grace_period.is_some() {
            return Err(AuthError::InvalidArgument(format!(
                "a grace period is given when a rotation starts (init), not with phase {to}"
            )));
        }
        let keys = self
            .change_phase(Move {
                types: types.clone(),
                to,
                mode,
                grace_period,
                by: caller.identity.username.clone(),
            })
            .await?;
        Ok(types.iter().map(|t| keys.cert_authority(*t)).collect())
    }

    /// GetCertAuthorities: every CA's public view (user, host, tls).
    pub async fn get_cert_authorities(&self, caller: &Caller) -> Result<Vec<CertAuthority>> {
        self.authorize(
            caller,
            "GetCertAuthorities",
            kind::CERT_AUTHORITY,
            Verb::Read,
        )
        .await?;
        Ok(self.cert_authorities())
    }

    /// The installed CAs' public views, without an authorization check (the watch checks
    /// once when it opens).
    pub fn cert_authorities(&self) -> Vec<CertAuthority> {
        let keys = self.cas.keys();
        CaType::ALL
            .iter()
            .map(|t| keys.cert_authority(*t))
            .collect()
    }

    /// Checks that `caller` may watch the CAs (WatchCertAuthorities).
    pub async fn authorize_ca_watch(&self, caller: &Caller) -> Result<()> {
        self.authorize(
            caller,
            "WatchCertAuthorities",
            kind::CERT_AUTHORITY,
            Verb::Read,
        )
        .await
    }

    /// Makes every automatic move that is due by this server's clock. Safe to run on every
    /// server at once: each move is a compare-and-swap on the phase it read.
    pub(crate) async fn advance_due_rotations(&self) -> Result<()> {
        let now = self.clock.now();
        let keys = self.cas.keys();
        let mut due: Vec<(CaType, RotationPhase)> = Vec::new();
        for t in CaType::ALL {
            let r = keys.rotation(t);
            if r.state != RotationState::InProgress || r.mode != RotationMode::Auto {
                continue;
            }
            if let Some(next) = r.schedule.and_then(|s| s.due(r.phase, now)) {
                due.push((t, next));
            }
        }
        for (t, to) in due {
            let m = Move {
                types: vec![t],
                to,
                mode: RotationMode::Auto,
                grace_period: None,
                by: "auth-server (automatic rotation)".into(),
            };
            match self
                .change_phase_if(m, |keys| {
                    let r = keys.rotation(t);
                    r.mode == RotationMode::Auto
                        && r.schedule.and_then(|s| s.due(r.phase, now)) == Some(to)
                })
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(ca = %t, to = %to, error = %e, "automatic rotation step failed; it is tried again at the next check");
                }
            }
        }
        Ok(())
    }

    /// Reads the stored CAs and installs them when they are newer than what is in use.
    pub(crate) async fn reload_cas(&self) -> Result<bool> {
        let Some(item) = self.state.backend.get(CA_KEY).await? else {
            return Err(AuthError::Internal(format!(
                "the store holds no certificate authorities at {CA_KEY}; it is damaged: restore it from a backup"
            )));
        };
        if item.revision <= self.cas.revision() {
            return Ok(false);
        }
        let keys = CaKeys::from_bytes(&item.value)?;
        self.cas.install(item.revision, keys)
    }

    async fn change_phase(&self, m: Move) -> Result<std::sync::Arc<CaKeys>> {
        self.change_phase_if(m, |_| true)
            .await?
            .ok_or_else(|| AuthError::Internal("the phase change was skipped".into()))
    }

    /// Makes move `m` if `still` holds for the stored CAs (read afresh on every attempt);
    /// `None` when it does not.
    async fn change_phase_if(
        &self,
        m: Move,
        still: impl Fn(&CaKeys) -> bool,
    ) -> Result<Option<std::sync::Arc<CaKeys>>> {
        let id = uuid::Uuid::new_v4().to_string();
        for _ in 0..CAS_ATTEMPTS {
            let (current, revision) = self.stored_cas().await?;
            if !still(&current) {
                return Ok(None);
            }
            let now = self.clock.now();
            // Key generation (RSA for the legacy suite) stays off the async workers.
            let (types, to, mode, grace, rid, from) = (
                m.types.clone(),
                m.to,
                m.mode,
                m.grace_period,
                id.clone(),
                current.clone(),
            );
            let next = tokio::task::spawn_blocking(move || {
                let mut next = from;
                for t in &types {
                    next = next
                        .rotate(*t, to, mode, grace, &rid, now)
                        .map_err(|e| match e {
                            machine_id_mint::MintError::Rotation(r) => {
                                AuthError::FailedPrecondition(format!(
                                    "the {t} CA: {r}; nothing was changed (see tctl status)"
                                ))
                            }
                            other => AuthError::from(other),
                        })?;
                }
                Ok::<_, AuthError>(next)
            })
            .await
            .map_err(|e| AuthError::Internal(format!("CA rotation task failed: {e}")))??;
            let events = m
                .types
                .iter()
                .filter_map(|t| {
                    let (from, to) = (current.rotation(*t).phase, next.rotation(*t).phase);
                    self.audit_record(
                        event_types::CA_ROTATE,
                        Some(&m.by),
                        true,
                        format!("{t} CA: rotation phase {from} -> {to}"),
                        json!({
                            "ca_type": t.as_str(),
                            "from_phase": from.as_str(),
                            "to_phase": to.as_str(),
                            "mode": next.rotation(*t).mode.as_str(),
                            "rotation_id": next.rotation(*t).current_id,
                        }),
                    )
                })
                .collect();
            let swap = Op::CompareAndSwap {
                key: CA_KEY.to_string(),
                revision,
                value: next.to_bytes(),
            };
            let written = self
                .state
                .uncached
                .write_with_events(vec![swap], events)
                .await;
            let new_revision = match written {
                Ok(r) => r,
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            self.cas.install(new_revision, next.clone())?;
            for t in &m.types {
                let (from, to) = (current.rotation(*t).phase, next.rotation(*t).phase);
                tracing::info!(ca = %t, %from, %to, by = %m.by, "CA rotation phase changed");
            }
            return Ok(Some(self.cas.keys()));
        }
        Err(AuthError::Unavailable(
            "the certificate authorities kept changing under this rotation request; retry".into(),
        ))
    }

    /// The CAs as stored now (not the cache) and their revision.
    async fn stored_cas(&self) -> Result<(CaKeys, Revision)> {
        let item = self.state.uncached.get(CA_KEY).await?.ok_or_else(|| {
            AuthError::Internal(format!(
                "the store holds no certificate authorities at {CA_KEY}; it is damaged: restore it from a backup"
            ))
        })?;
        let keys = CaKeys::from_bytes(&item.value)
            .map_err(|e| AuthError::Internal(format!("the stored certificate authorities: {e}")))?;
        Ok((keys, item.revision))
    }
}
