//! The edge between wire and domain: every generated request the services take becomes the
//! core's domain arguments here, and every domain result becomes a generated response. A
//! zero TTL on the wire means "the default" (`None`), an empty string "not given".

use std::time::Duration;

use machine_id_proto::v1;

use machine_id_store::EventPosition;

use crate::core::{
    BotCerts, BotCertsRequest, CaExport, CertsRequest, CreateBot, CreatedBot, EventPage,
    EventQuery, HostCertRequest, IamJoinRequest, IssuedCerts, LockBot, OutputRequest,
    SignedHostCert, TokenJoinRequest,
};
use crate::error::AuthError;

/// A wire lifetime in seconds: 0 asks for the default.
fn ttl(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// A wire string: empty means not given.
fn given(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl From<v1::RegisterUsingTokenRequest> for TokenJoinRequest {
    fn from(r: v1::RegisterUsingTokenRequest) -> Self {
        Self {
            token: r.token,
            public_key: r.public_key,
            ttl: ttl(r.ttl_seconds),
        }
    }
}

impl From<v1::RegisterUsingIamMethodRequest> for IamJoinRequest {
    fn from(r: v1::RegisterUsingIamMethodRequest) -> Self {
        Self {
            token: r.token,
            public_key: r.public_key,
            ttl: ttl(r.ttl_seconds),
            sts_identity_request: r.sts_identity_request,
        }
    }
}

impl From<v1::GenerateUserCertsRequest> for CertsRequest {
    fn from(r: v1::GenerateUserCertsRequest) -> Self {
        Self {
            public_key: r.public_key,
            ttl: ttl(r.ttl_seconds),
            role_requests: r.role_requests,
        }
    }
}

impl From<v1::GenerateBotCertsRequest> for BotCertsRequest {
    fn from(r: v1::GenerateBotCertsRequest) -> Self {
        Self {
            identity_public_key: (!r.identity_public_key.is_empty())
                .then_some(r.identity_public_key),
            identity_ttl: ttl(r.identity_ttl_seconds),
            outputs: r
                .outputs
                .into_iter()
                .map(|o| OutputRequest {
                    public_key: o.public_key,
                    ttl: ttl(o.ttl_seconds),
                    role_requests: o.role_requests,
                })
                .collect(),
        }
    }
}

impl From<BotCerts> for v1::GenerateBotCertsResponse {
    fn from(c: BotCerts) -> Self {
        use v1::output_certs_result::Result as Outcome;
        Self {
            identity: c.identity.map(Into::into),
            outputs: c
                .outputs
                .into_iter()
                .map(|o| match o {
                    Ok(out) => v1::OutputCertsResult {
                        result: Some(Outcome::Certs(out.certs.into())),
                        roles: out.roles,
                    },
                    Err(e) => {
                        let status = tonic::Status::from(e);
                        v1::OutputCertsResult {
                            result: Some(Outcome::Error(v1::CallError {
                                code: status.code() as i32,
                                message: status.message().to_string(),
                            })),
                            roles: vec![],
                        }
                    }
                })
                .collect(),
            cluster_name: c.cluster_name,
            proxy_public_addr: c.proxy_public_addr.unwrap_or_default(),
            host_ca_keys: c.host_ca_keys,
        }
    }
}

impl From<v1::CreateBotRequest> for CreateBot {
    fn from(r: v1::CreateBotRequest) -> Self {
        Self {
            name: r.name,
            roles: r.roles,
            logins: r.logins,
            token_name: given(r.token_name),
            token_ttl: ttl(r.token_ttl_seconds),
        }
    }
}

impl From<v1::LockBotRequest> for LockBot {
    fn from(r: v1::LockBotRequest) -> Self {
        Self {
            name: r.name,
            message: given(r.message),
            ttl: ttl(r.ttl_seconds),
        }
    }
}

impl From<v1::SignHostCertRequest> for HostCertRequest {
    fn from(r: v1::SignHostCertRequest) -> Self {
        Self {
            public_key: r.public_key,
            hostnames: r.hostnames,
            ttl: ttl(r.ttl_seconds),
        }
    }
}

impl TryFrom<v1::SearchEventsRequest> for EventQuery {
    type Error = AuthError;

    fn try_from(r: v1::SearchEventsRequest) -> Result<Self, AuthError> {
        let time = |t: Option<prost_types::Timestamp>| {
            t.as_ref()
                .map(machine_id_proto::timestamp_to)
                .transpose()
                .map_err(|e| AuthError::InvalidArgument(e.to_string()))
        };
        Ok(Self {
            event_type: given(r.event_type),
            since: time(r.since)?,
            until: time(r.until)?,
            limit: (r.limit > 0).then_some(r.limit as usize),
            page: given(r.page).map(|p| page_from_wire(&p)).transpose()?,
        })
    }
}

impl From<EventPage> for v1::SearchEventsResponse {
    fn from(p: EventPage) -> Self {
        Self {
            events: p.events.into_iter().map(Into::into).collect(),
            next_page: p.next_page.as_ref().map(page_to_wire).unwrap_or_default(),
        }
    }
}

/// The version tag of the page cursor's format.
const PAGE_FORMAT: &str = "1";

/// A page cursor as the wire carries it: opaque to clients (hex of `1:<time>:<id>`), so the
/// format may change with a new tag.
fn page_to_wire(p: &EventPosition) -> String {
    hex::encode(format!("{PAGE_FORMAT}:{}:{}", p.time_nanos, p.id))
}

/// A page cursor from the wire; anything this server did not write is refused.
fn page_from_wire(s: &str) -> Result<EventPosition, AuthError> {
    let bad = || {
        AuthError::InvalidArgument(
            "page is not a next_page this server returned; search again without it".into(),
        )
    };
    let text = String::from_utf8(hex::decode(s).map_err(|_| bad())?).map_err(|_| bad())?;
    let rest = text
        .strip_prefix(PAGE_FORMAT)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or_else(bad)?;
    let (time, id) = rest.split_once(':').ok_or_else(bad)?;
    Ok(EventPosition {
        time_nanos: time.parse().map_err(|_| bad())?,
        id: id.to_string(),
    })
}

impl From<IssuedCerts> for v1::Certs {
    fn from(c: IssuedCerts) -> Self {
        Self {
            ssh_cert: c.ssh_cert,
            tls_cert: c.tls_cert,
            tls_ca_certs: c.tls_ca_certs,
            ssh_ca_keys: c.ssh_ca_keys,
        }
    }
}

impl From<CreatedBot> for v1::CreateBotResponse {
    fn from(c: CreatedBot) -> Self {
        Self {
            bot: Some(c.bot.into()),
            token_name: c.token_name,
            token_expires: c.token_expires.map(machine_id_proto::timestamp_from),
            join_method: c.join_method.as_str().to_string(),
        }
    }
}

impl From<CaExport> for v1::ExportCaResponse {
    fn from(c: CaExport) -> Self {
        Self {
            ssh_public_keys: c.ssh_public_keys,
            tls_certs: c.tls_certs,
        }
    }
}

impl From<SignedHostCert> for v1::SignHostCertResponse {
    fn from(c: SignedHostCert) -> Self {
        Self {
            ssh_cert: c.ssh_cert,
            host_ca_key: c.host_ca_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_empty_mean_not_given() {
        assert_eq!(ttl(0), None);
        assert_eq!(ttl(90), Some(Duration::from_secs(90)));
        assert_eq!(given(String::new()), None);
        assert_eq!(given("x".into()), Some("x".to_string()));
        let q = EventQuery::try_from(v1::SearchEventsRequest::default())
            .expect("a query without a time converts");
        assert_eq!(
            (q.event_type, q.since, q.until, q.limit),
            (None, None, None, None)
        );
        assert_eq!(q.page, None);
    }

    #[test]
    fn page_cursor_round_trips_and_refuses_others() {
        let p = EventPosition {
            time_nanos: 1_700_000_000_123_456_789,
            id: "a:b-c".into(),
        };
        assert_eq!(page_from_wire(&page_to_wire(&p)).expect("round trip"), p);
        for bad in [
            "",
            "zz",
            &hex::encode("2:1:x"),
            &hex::encode("1:x:y"),
            &hex::encode("1:5"),
        ] {
            let e = page_from_wire(bad).expect_err(bad).to_string();
            assert!(e.contains("search again without it"), "{e}");
        }
    }
}
