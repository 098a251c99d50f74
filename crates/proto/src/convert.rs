//! Wire ↔ domain conversions. Only `client` and `auth` use them.

use crate::v1;
use machine_id_types as t;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// A wire message that is not a valid domain value.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what} in message: {message}")]
pub struct ConvertError {
    /// What was being converted.
    pub what: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(what: &'static str, message: impl Into<String>) -> ConvertError {
    ConvertError {
        what,
        message: message.into(),
    }
}

/// A protobuf timestamp for `t`.
pub fn timestamp_from(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

/// The time a protobuf timestamp names.
pub fn timestamp_to(ts: &prost_types::Timestamp) -> Result<OffsetDateTime, ConvertError> {
    let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|e| err("timestamp", e.to_string()))
}

impl From<t::Metadata> for v1::Metadata {
    fn from(m: t::Metadata) -> Self {
        Self {
            name: m.name,
            description: m.description.unwrap_or_default(),
            labels: m.labels.into_iter().collect(),
            expires: m.expires.map(timestamp_from),
        }
    }
}

fn metadata(m: Option<v1::Metadata>) -> Result<t::Metadata, ConvertError> {
    let m = m.ok_or_else(|| err("metadata", "missing"))?;
    Ok(t::Metadata {
        name: m.name,
        description: Some(m.description).filter(|d| !d.is_empty()),
        labels: m.labels.into_iter().collect(),
        expires: m.expires.as_ref().map(timestamp_to).transpose()?,
    })
}

fn strings(v: Vec<String>) -> v1::Strings {
    v1::Strings { values: v }
}

impl From<t::RoleConditions> for v1::RoleConditions {
    fn from(c: t::RoleConditions) -> Self {
        Self {
            logins: c.logins,
            node_labels: c
                .node_labels
                .into_iter()
                .map(|(k, v)| (k, strings(v.values().to_vec())))
                .collect(),
            rules: c
                .rules
                .into_iter()
                .map(|r| v1::Rule {
                    resources: r.resources,
                    verbs: r.verbs,
                })
                .collect(),
            impersonate_users: c
                .impersonate
                .as_ref()
                .map(|i| i.users.clone())
                .unwrap_or_default(),
            impersonate_roles: c.impersonate.map(|i| strings(i.roles)),
        }
    }
}

impl From<v1::RoleConditions> for t::RoleConditions {
    fn from(c: v1::RoleConditions) -> Self {
        Self {
            logins: c.logins,
            node_labels: c
                .node_labels
                .into_iter()
                .map(|(k, v)| {
                    let vals = if v.values.len() == 1 {
                        t::LabelValues::One(v.values.into_iter().next().unwrap_or_default())
                    } else {
                        t::LabelValues::Many(v.values)
                    };
                    (k, vals)
                })
                .collect(),
            rules: c
                .rules
                .into_iter()
                .map(|r| t::Rule {
                    resources: r.resources,
                    verbs: r.verbs,
                })
                .collect(),
            impersonate: c.impersonate_roles.map(|r| t::ImpersonateConditions {
                roles: r.values,
                users: c.impersonate_users,
            }),
        }
    }
}

impl From<t::Role> for v1::Role {
    fn from(r: t::Role) -> Self {
        let o = r.spec.options;
        Self {
            metadata: Some(r.metadata.into()),
            allow: Some(r.spec.allow.into()),
            deny: Some(r.spec.deny.into()),
            options: Some(v1::RoleOptions {
                max_session_ttl_seconds: o.max_session_ttl.map(|d| d.as_secs()),
                port_forwarding: o.port_forwarding,
                forward_agent: o.forward_agent,
            }),
        }
    }
}

impl TryFrom<v1::Role> for t::Role {
    type Error = ConvertError;
    fn try_from(r: v1::Role) -> Result<Self, ConvertError> {
        let o = r.options.unwrap_or_default();
        let role = t::Role {
            metadata: metadata(r.metadata)?,
            spec: t::RoleSpec {
                allow: r.allow.unwrap_or_default().into(),
                deny: r.deny.unwrap_or_default().into(),
                options: t::RoleOptions {
                    max_session_ttl: o
                        .max_session_ttl_seconds
                        .map(std::time::Duration::from_secs),
                    port_forwarding: o.port_forwarding,
                    forward_agent: o.forward_agent,
                },
            },
        };
        role.validate().map_err(|e| err("role", e.to_string()))?;
        Ok(role)
    }
}

impl From<t::ProvisionToken> for v1::Token {
    fn from(tok: t::ProvisionToken) -> Self {
        Self {
            metadata: Some(tok.metadata.into()),
            roles: tok.spec.roles,
            join_method: tok.spec.join_method.as_str().to_string(),
            bot_name: tok.spec.bot_name,
            allow: tok
                .spec
                .allow
                .into_iter()
                .map(|r| v1::TokenRule {
                    aws_account: r.aws_account,
                    aws_arn: r.aws_arn,
                })
                .collect(),
        }
    }
}

impl TryFrom<v1::Token> for t::ProvisionToken {
    type Error = ConvertError;
    fn try_from(tok: v1::Token) -> Result<Self, ConvertError> {
        let out = t::ProvisionToken {
            metadata: metadata(tok.metadata)?,
            spec: t::TokenSpec {
                roles: tok.roles,
                join_method: tok
                    .join_method
                    .parse()
                    .map_err(|e: String| err("token", e))?,
                bot_name: tok.bot_name,
                allow: tok
                    .allow
                    .into_iter()
                    .map(|r| t::TokenRule {
                        aws_account: r.aws_account,
                        aws_arn: r.aws_arn,
                    })
                    .collect(),
            },
        };
        out.validate().map_err(|e| err("token", e.to_string()))?;
        Ok(out)
    }
}

fn traits_to_wire(
    m: BTreeMap<String, Vec<String>>,
) -> std::collections::HashMap<String, v1::Strings> {
    m.into_iter().map(|(k, v)| (k, strings(v))).collect()
}

impl From<t::User> for v1::User {
    fn from(u: t::User) -> Self {
        Self {
            metadata: Some(u.metadata.into()),
            roles: u.spec.roles,
            traits: traits_to_wire(u.spec.traits),
        }
    }
}

impl TryFrom<v1::User> for t::User {
    type Error = ConvertError;
    fn try_from(u: v1::User) -> Result<Self, ConvertError> {
        let out = t::User {
            metadata: metadata(u.metadata)?,
            spec: t::UserSpec {
                last_renewal: None,
                roles: u.roles,
                traits: u.traits.into_iter().map(|(k, v)| (k, v.values)).collect(),
            },
        };
        out.validate().map_err(|e| err("user", e.to_string()))?;
        Ok(out)
    }
}

impl From<t::Node> for v1::Node {
    fn from(n: t::Node) -> Self {
        Self {
            metadata: Some(n.metadata.into()),
            addr: n.spec.addr,
            hostname: n.spec.hostname,
        }
    }
}

impl TryFrom<v1::Node> for t::Node {
    type Error = ConvertError;
    fn try_from(n: v1::Node) -> Result<Self, ConvertError> {
        let out = t::Node {
            metadata: metadata(n.metadata)?,
            spec: t::NodeSpec {
                addr: n.addr,
                hostname: n.hostname,
            },
        };
        out.validate().map_err(|e| err("node", e.to_string()))?;
        Ok(out)
    }
}

impl From<t::Lock> for v1::Lock {
    fn from(l: t::Lock) -> Self {
        Self {
            metadata: Some(l.metadata.into()),
            target_user: l.spec.target.user,
            target_role: l.spec.target.role,
            message: l.spec.message,
            created: l.spec.created.map(timestamp_from),
            issued_before: l.spec.issued_before.map(timestamp_from),
        }
    }
}

impl TryFrom<v1::Lock> for t::Lock {
    type Error = ConvertError;
    fn try_from(l: v1::Lock) -> Result<Self, ConvertError> {
        let out = t::Lock {
            metadata: metadata(l.metadata)?,
            spec: t::LockSpec {
                target: t::LockTarget {
                    user: l.target_user,
                    role: l.target_role,
                },
                message: l.message,
                created: l.created.as_ref().map(timestamp_to).transpose()?,
                issued_before: l.issued_before.as_ref().map(timestamp_to).transpose()?,
            },
        };
        out.validate().map_err(|e| err("lock", e.to_string()))?;
        Ok(out)
    }
}

impl From<t::Bot> for v1::Bot {
    fn from(b: t::Bot) -> Self {
        Self {
            name: b.name,
            user_name: b.user_name,
            roles: b.roles,
            locked: b.locked,
        }
    }
}

impl From<v1::Bot> for t::Bot {
    fn from(b: v1::Bot) -> Self {
        Self {
            name: b.name,
            user_name: b.user_name,
            roles: b.roles,
            locked: b.locked,
        }
    }
}

impl From<t::AuditEvent> for v1::AuditEvent {
    fn from(e: t::AuditEvent) -> Self {
        Self {
            id: e.id,
            time: Some(timestamp_from(e.time)),
            event_type: e.event_type,
            user: e.user,
            success: e.success,
            message: e.message,
            fields_json: serde_json::Value::Object(e.fields).to_string(),
        }
    }
}

impl TryFrom<v1::AuditEvent> for t::AuditEvent {
    type Error = ConvertError;
    fn try_from(e: v1::AuditEvent) -> Result<Self, ConvertError> {
        let fields = if e.fields_json.is_empty() {
            serde_json::Map::new()
        } else {
            serde_json::from_str(&e.fields_json).map_err(|x| err("audit event", x.to_string()))?
        };
        Ok(Self {
            id: e.id,
            time: timestamp_to(
                e.time
                    .as_ref()
                    .ok_or_else(|| err("audit event", "time missing"))?,
            )?,
            event_type: e.event_type,
            user: e.user,
            success: e.success,
            message: e.message,
            fields,
        })
    }
}

impl From<t::Rotation> for v1::Rotation {
    fn from(r: t::Rotation) -> Self {
        let schedule = r.schedule;
        Self {
            state: r.state.as_str().into(),
            phase: r.phase.as_str().into(),
            mode: r.mode.as_str().into(),
            current_id: r.current_id,
            started: r.started.map(timestamp_from),
            grace_period_seconds: r.grace_period.map_or(0, |d| d.as_secs()),
            last_rotated: r.last_rotated.map(timestamp_from),
            schedule_update_clients: schedule.map(|s| timestamp_from(s.update_clients)),
            schedule_update_servers: schedule.map(|s| timestamp_from(s.update_servers)),
            schedule_standby: schedule.map(|s| timestamp_from(s.standby)),
        }
    }
}

impl TryFrom<v1::Rotation> for t::Rotation {
    type Error = ConvertError;

    fn try_from(r: v1::Rotation) -> Result<Self, ConvertError> {
        let opt = |ts: &Option<prost_types::Timestamp>| ts.as_ref().map(timestamp_to).transpose();
        let schedule = match (
            opt(&r.schedule_update_clients)?,
            opt(&r.schedule_update_servers)?,
            opt(&r.schedule_standby)?,
        ) {
            (Some(update_clients), Some(update_servers), Some(standby)) => {
                Some(t::RotationSchedule {
                    update_clients,
                    update_servers,
                    standby,
                })
            }
            _ => None,
        };
        Ok(Self {
            state: match r.state.as_str() {
                "in_progress" => t::RotationState::InProgress,
                "standby" | "" => t::RotationState::Standby,
                other => return Err(err("rotation state", format!("unknown state {other:?}"))),
            },
            phase: if r.phase.is_empty() {
                t::RotationPhase::Standby
            } else {
                r.phase
                    .parse()
                    .map_err(|e: t::RotationError| err("rotation phase", e.to_string()))?
            },
            mode: match r.mode.as_str() {
                "auto" => t::RotationMode::Auto,
                "manual" | "" => t::RotationMode::Manual,
                other => return Err(err("rotation mode", format!("unknown mode {other:?}"))),
            },
            current_id: r.current_id,
            started: opt(&r.started)?,
            grace_period: (r.grace_period_seconds > 0)
                .then(|| std::time::Duration::from_secs(r.grace_period_seconds)),
            last_rotated: opt(&r.last_rotated)?,
            schedule,
        })
    }
}

impl From<t::CertAuthority> for v1::CertAuthority {
    fn from(ca: t::CertAuthority) -> Self {
        let spec = ca.spec;
        Self {
            ca_type: spec.ca_type.as_str().into(),
            cluster_name: spec.cluster_name,
            active_ssh: spec.active_keys.ssh,
            active_tls: spec.active_keys.tls,
            trusted_ssh: spec.additional_trusted_keys.ssh,
            trusted_tls: spec.additional_trusted_keys.tls,
            rotation: Some(spec.rotation.into()),
        }
    }
}

impl TryFrom<v1::CertAuthority> for t::CertAuthority {
    type Error = ConvertError;

    fn try_from(ca: v1::CertAuthority) -> Result<Self, ConvertError> {
        let ca_type: t::CaType = ca
            .ca_type
            .parse()
            .map_err(|e: t::RotationError| err("CA type", e.to_string()))?;
        let rotation = ca.rotation.map(TryInto::try_into).transpose()?;
        Ok(t::CertAuthority::new(
            &ca.cluster_name,
            ca_type,
            t::CaPublicKeys {
                ssh: ca.active_ssh,
                tls: ca.active_tls,
            },
            t::CaPublicKeys {
                ssh: ca.trusted_ssh,
                tls: ca.trusted_tls,
            },
            rotation.unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    #[test]
    fn roles_round_trip() {
        for role in t::default_roles() {
            let wire: v1::Role = role.clone().into();
            let back: t::Role = wire.try_into().unwrap();
            assert_eq!(back, role);
        }
    }

    #[test]
    fn invalid_token_is_refused() {
        let wire = v1::Token {
            metadata: Some(v1::Metadata {
                name: "x".into(),
                ..Default::default()
            }),
            roles: vec!["Bot".into()],
            join_method: "token".into(),
            bot_name: None,
            allow: vec![],
        };
        let e = t::ProvisionToken::try_from(wire).unwrap_err();
        assert!(e.to_string().contains("bot_name"), "{e}");
    }

    #[test]
    fn cert_authorities_round_trip() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("t");
        let (rotation, _) = t::Rotation::default()
            .advance(
                t::RotationPhase::Init,
                t::RotationMode::Auto,
                Some(std::time::Duration::from_secs(90)),
                "r1",
                now,
            )
            .expect("init");
        let ca = t::CertAuthority::new(
            "example.com",
            t::CaType::Tls,
            t::CaPublicKeys {
                ssh: vec![],
                tls: vec!["-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into()],
            },
            t::CaPublicKeys::default(),
            rotation,
        );
        let wire: v1::CertAuthority = ca.clone().into();
        assert_eq!(
            wire.rotation.as_ref().map(|r| r.phase.as_str()),
            Some("init")
        );
        let back = t::CertAuthority::try_from(wire).expect("back");
        assert_eq!(back, ca);
        let bad = v1::CertAuthority {
            ca_type: "db".into(),
            ..Default::default()
        };
        assert!(t::CertAuthority::try_from(bad).is_err());
    }
}
