//! The edge between wire and domain: every generated request the services take becomes the
//! core's domain arguments here, and every domain result becomes a generated response. A
//! zero TTL on the wire means "the default" (`None`), an empty string "not given".

use std::time::Duration;

use machine_id_proto::v1;

use crate::core::{
    CaExport, CertsRequest, CreateBot, CreatedBot, EventQuery, HostCertRequest, IamJoinRequest,
    IssuedCerts, LockBot, SignedHostCert, TokenJoinRequest,
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
        Ok(Self {
            event_type: given(r.event_type),
            since: r
                .since
                .as_ref()
                .map(machine_id_proto::timestamp_to)
                .transpose()
                .map_err(|e| AuthError::InvalidArgument(e.to_string()))?,
            limit: (r.limit > 0).then_some(r.limit as usize),
        })
    }
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
        let q = EventQuery::try_from(v1::SearchEventsRequest {
            event_type: String::new(),
            limit: 0,
            since: None,
        })
        .expect("a query without a time converts");
        assert_eq!((q.event_type, q.since, q.limit), (None, None, None));
    }
}
