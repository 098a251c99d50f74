//! The client's error type: server statuses and transport failures turned into messages that say
//! what to do.

use std::path::PathBuf;
use thiserror::Error;

/// Everything a call to the auth server can fail with. Messages are for people: the server's
/// own messages pass through unchanged, and local failures say what to do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The SSH proxy refused the connection; `message` is its reason.
    #[error("the proxy at {addr} refused the connection: {message}")]
    ProxyRefused {
        /// The proxy's address.
        addr: String,
        /// Why (unknown node, access denied, expired certificate, node down, ...).
        message: String,
    },

    /// An identity file could not be read.
    #[error(
        "cannot read {path}: {error}; is this an identity directory (key, tlscert, tlscacerts)?"
    )]
    IdentityRead {
        /// The file.
        path: PathBuf,
        /// Why (in the message, not a separate cause, so it is not printed twice).
        error: std::io::Error,
    },

    /// An identity file (or in-memory part) is not what it must be.
    #[error("invalid identity {what}: {message}")]
    IdentityInvalid {
        /// The file or part at fault (`/var/lib/machine-id/admin/tlscert`, `key`, ...).
        what: String,
        /// What is wrong.
        message: String,
    },

    /// The identity's certificate has expired; connecting with it would be refused.
    #[error("the identity certificate {what} (user {user}) expired at {expired}; {hint}")]
    IdentityExpired {
        /// The certificate file, or `in-memory identity`.
        what: String,
        /// The user the certificate names.
        user: String,
        /// When it expired (RFC 3339).
        expired: String,
        /// What to do.
        hint: String,
    },

    /// A CA pin that does not parse.
    #[error("{message}")]
    InvalidPin {
        /// What was given.
        pin: String,
        /// What is wrong, naming the pin (`expected algorithm:pin`, ...).
        message: String,
    },

    /// Joining without a CA pin or CA certificates would trust whoever answers.
    #[error(
        "no CA pin given; pass --ca-pin=sha256:... as printed by `tctl bots add` or `tctl status` on the auth server"
    )]
    NoPins,

    /// No CA the server presented matches a pin.
    #[error(
        "the auth server at {addr} presents CA {presented}, which matches none of the CA pins given ({expected}); the cluster's CA may have been rotated, or this is not the server you meant: compare with the pins `tctl status` prints on the auth server"
    )]
    PinMismatch {
        /// The address dialed.
        addr: String,
        /// The pin of each presented CA, comma-separated.
        presented: String,
        /// The pins given.
        expected: String,
    },

    /// A CA the server presented has expired (or is not yet valid).
    #[error(
        "the auth server at {addr} presents CA {pin}, which is not valid now (valid until {not_after}); the cluster's CA must be rotated"
    )]
    CaExpired {
        /// The address dialed.
        addr: String,
        /// The CA's pin.
        pin: String,
        /// Its NotAfter (RFC 3339).
        not_after: String,
    },

    /// A certificate that does not parse.
    #[error("invalid certificate ({what}): {message}")]
    BadCertificate {
        /// Which certificate.
        what: String,
        /// What is wrong.
        message: String,
    },

    /// A TLS configuration that cannot be built (bad key, no usable CA).
    #[error("cannot set up TLS: {0}")]
    TlsConfig(String),

    /// The auth server's certificate is not signed by the CAs this client trusts.
    #[error(
        "the auth server at {addr} presented a certificate this client does not trust ({message}); is the identity (or CA pin) for this cluster?"
    )]
    UntrustedServer {
        /// The address dialed.
        addr: String,
        /// The TLS error.
        message: String,
    },

    /// The auth server rejected this client's certificate in the TLS handshake (a fatal alert
    /// such as `DecryptError`, `BadCertificate` or `UnknownCA`): it is not signed by a CA the
    /// cluster trusts. Expiry is not the cause (an expired identity is refused before
    /// dialing), so the CA is: the cluster's CAs were rotated while this identity was not
    /// used, or the identity is of another cluster. Never retried.
    #[error(
        "the auth server at {addr} rejected this client's certificate (TLS alert {alert}): it is not signed by a CA the cluster trusts; the cluster's certificate authorities were probably rotated while this identity was not in use (or it belongs to another cluster): get a new identity (a bot joins again with a new token: `tctl bots add` or `tctl tokens add`)"
    )]
    CertificateRejected {
        /// The address dialed.
        addr: String,
        /// The TLS alert the server sent.
        alert: String,
    },

    /// CA-pin bootstrap during a TLS CA rotation: the cluster trusts two TLS CAs, the pins
    /// given cover one of them, and the server presents a certificate from the other, so
    /// nothing authenticates the list of CAs it sent.
    #[error(
        "the auth server at {addr} is rotating its TLS CA: it trusts the CAs {cluster_pins} and presents a certificate from a CA none of the given pins ({given}) covers, so its CA list cannot be authenticated; pass both pins `tctl status` shows during the rotation (--ca-pin={both} or --ca-pin repeated)"
    )]
    RotationNeedsBothPins {
        /// The address dialed.
        addr: String,
        /// The pins of every CA the server sent, comma-separated.
        cluster_pins: String,
        /// The pins given, comma-separated.
        given: String,
        /// The pins of every CA the server sent, comma-separated without spaces, for the
        /// flag.
        both: String,
    },

    /// A second renewal of the caller's own identity through a [`crate::Client`] whose
    /// renewal already succeeded: its certificate now has a stale generation, and the server
    /// would take the renewal for a replay and lock the bot. Nothing was sent.
    #[error(
        "this client's identity was already renewed: a second renewal from the old certificate would be a replay of a stale generation, and the server would lock the bot; connect a new client with the renewed identity (nothing was sent)"
    )]
    IdentityRenewed,

    /// The auth server cannot be reached (refused, timed out, handshake cut).
    #[error("cannot reach the auth server at {addr}: {message}; is it running?")]
    Unavailable {
        /// The address dialed.
        addr: String,
        /// The cause.
        message: String,
    },

    /// No auth server of a list could be reached (or each answered `UNAVAILABLE`); one entry
    /// per address, `addr: what it said`, in the list's order.
    #[error(
        "cannot reach any of the auth servers ({}); are they running, and is the list (--auth-server) right?",
        failures.join("; ")
    )]
    AllUnavailable {
        /// `addr: message` for each address tried.
        failures: Vec<String>,
    },

    /// An address that is not `host:port`.
    #[error(
        "invalid auth server address {addr:?}: {message}; expected host:port, e.g. 127.0.0.1:3025"
    )]
    BadAddress {
        /// What was given.
        addr: String,
        /// What is wrong.
        message: String,
    },

    /// The server found no such resource.
    #[error("{0}")]
    NotFound(String),
    /// The resource exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The caller may not do this.
    #[error("access denied: {0}")]
    PermissionDenied(String),
    /// The caller's identity was not accepted.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// The request was refused as malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The auth server answered, but a service it depends on (AWS STS, for an `iam` join)
    /// failed or did not answer in time; retrying later may succeed.
    #[error("the auth server could not reach {service}: {message}")]
    Upstream {
        /// The service (`sts`).
        service: String,
        /// The server's message.
        message: String,
    },
    /// The bot could not build its AWS proof for an `iam` join (no credentials, bad endpoint).
    #[error("cannot prove the AWS identity: {0}")]
    IamProof(machine_id_join::iam::IamError),
    /// A concurrent change won; the call may be retried.
    #[error("{0} (a concurrent change won; retry)")]
    Aborted(String),
    /// Any other status from the server.
    #[error("auth server error ({code}): {message}")]
    Server {
        /// The gRPC status code.
        code: String,
        /// The server's message.
        message: String,
    },

    /// The server answered with a message that is not a valid domain value.
    #[error("unexpected answer from the auth server: {0}")]
    Convert(machine_id_proto::ConvertError),
}

impl From<machine_id_proto::ConvertError> for ClientError {
    fn from(e: machine_id_proto::ConvertError) -> Self {
        Self::Convert(e)
    }
}

impl ClientError {
    /// Whether retrying the same call may succeed (a lost compare-and-swap race or a server
    /// that cannot be reached right now).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Aborted(_)
                | Self::Unavailable { .. }
                | Self::AllUnavailable { .. }
                | Self::Upstream { .. }
        )
    }

    /// Whether the server said the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }

    /// Whether the server said the resource exists already.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Self::AlreadyExists(_))
    }

    /// Whether the server does not implement the call (a server from an older release).
    pub fn is_unimplemented(&self) -> bool {
        matches!(self, Self::Server { code, .. } if code == "Unimplemented")
    }

    /// Maps a gRPC status from the server at `addr`.
    pub(crate) fn from_status(status: tonic::Status, addr: &str) -> Self {
        use tonic::Code;
        let message = status.message().to_string();
        if let Some(service) = status
            .metadata()
            .get("x-machine-id-upstream")
            .and_then(|v| v.to_str().ok())
        {
            return Self::Upstream {
                service: service.to_string(),
                message,
            };
        }
        match status.code() {
            Code::NotFound => Self::NotFound(message),
            Code::AlreadyExists => Self::AlreadyExists(message),
            Code::PermissionDenied => Self::PermissionDenied(message),
            Code::Unauthenticated => Self::Unauthenticated(message),
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                Self::InvalidArgument(message)
            }
            Code::Aborted => Self::Aborted(message),
            Code::Unavailable => Self::Unavailable {
                addr: addr.to_string(),
                message: if message.is_empty() {
                    "the connection failed".to_string()
                } else {
                    message
                },
            },
            code => Self::Server {
                code: format!("{code:?}"),
                message,
            },
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
