//! Counting gRPC calls: a tower layer around the services that reads each call's method from
//! its path and its status code from the response (the headers of a trailers-only answer, or
//! the trailers at the end of the body), and records the call once: when the code is known,
//! or, for a body dropped before its end (the client went away), as `Cancelled`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tonic::Code;

use super::Metrics;

/// Every method the server implements, as `(service, method)`; a path not in the list is
/// counted as `unknown` (so a caller cannot grow the label set). A test checks the list
/// against the generated code.
pub(crate) const METHODS: &[(&str, &str)] = &[
    ("AuthService", "Ping"),
    ("AuthService", "GetClusterCACerts"),
    ("AuthService", "GenerateUserCerts"),
    ("AuthService", "GenerateBotCerts"),
    ("AuthService", "GetRole"),
    ("AuthService", "ListRoles"),
    ("AuthService", "UpsertRole"),
    ("AuthService", "DeleteRole"),
    ("AuthService", "GetToken"),
    ("AuthService", "ListTokens"),
    ("AuthService", "UpsertToken"),
    ("AuthService", "DeleteToken"),
    ("AuthService", "GetUser"),
    ("AuthService", "ListUsers"),
    ("AuthService", "CreateBot"),
    ("AuthService", "GetBot"),
    ("AuthService", "ListBots"),
    ("AuthService", "DeleteBot"),
    ("AuthService", "LockBot"),
    ("AuthService", "GetNode"),
    ("AuthService", "ListNodes"),
    ("AuthService", "UpsertNode"),
    ("AuthService", "DeleteNode"),
    ("AuthService", "ListLocks"),
    ("AuthService", "UpsertLock"),
    ("AuthService", "DeleteLock"),
    ("AuthService", "ExportCA"),
    ("AuthService", "SignHostCert"),
    ("AuthService", "SearchEvents"),
    ("AuthService", "RotateCA"),
    ("AuthService", "GetCertAuthorities"),
    ("AuthService", "WatchCertAuthorities"),
    ("JoinService", "RegisterUsingToken"),
    ("JoinService", "RegisterUsingIAMMethod"),
];

/// The package every service path starts with.
const PACKAGE: &str = "machineid.v1.";
/// gRPC status codes, 0 to 16.
const CODES: usize = 17;

/// The index in [`METHODS`] of the call at `path`, `METHODS.len()` when unknown.
fn method_index(path: &str) -> usize {
    let known = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(PACKAGE))
        .and_then(|p| p.split_once('/'))
        .and_then(|(service, method)| {
            METHODS
                .iter()
                .position(|(s, m)| *s == service && *m == method)
        });
    known.unwrap_or(METHODS.len())
}

/// Calls per method and code: one atomic per pair, allocated up front.
#[derive(Debug)]
pub(super) struct GrpcCounts {
    cells: Box<[AtomicU64]>,
}

impl GrpcCounts {
    pub(super) fn new() -> Self {
        Self {
            cells: (0..(METHODS.len() + 1) * CODES)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    pub(super) fn inc(&self, method: usize, code: Code) {
        let code = usize::try_from(i32::from(code)).unwrap_or(2).min(CODES - 1);
        if let Some(c) = self.cells.get(method.min(METHODS.len()) * CODES + code) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(service, method, code name, count)` for every pair counted at least once.
    pub(super) fn read(
        &self,
    ) -> impl Iterator<Item = (&'static str, &'static str, &'static str, u64)> + '_ {
        self.cells.iter().enumerate().filter_map(|(i, c)| {
            let n = c.load(Ordering::Relaxed);
            if n == 0 {
                return None;
            }
            let (service, method) = METHODS
                .get(i / CODES)
                .copied()
                .unwrap_or(("unknown", "unknown"));
            let code = i32::try_from(i % CODES).map_or(Code::Unknown, Code::from);
            Some((service, method, code_name(code), n))
        })
    }
}

/// The name of `code` as gRPC's own libraries label it (`OK`, `PermissionDenied`, ...).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// What the service layer tells the metrics about a call that its path and code do not
/// show.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
pub(crate) enum Flag {
    /// A renewal of the caller's own identity.
    Renewal = 1,
    /// Refused because a lock is in force on the caller.
    Locked = 2,
}

/// The flags of one call, put in its request's extensions by [`MetricsLayer`].
#[derive(Debug, Clone, Default)]
struct CallFlags(Arc<AtomicU8>);

/// Marks the call whose request carries `extensions` with `flag` (nothing happens outside
/// [`MetricsLayer`], e.g. in unit tests of the services).
pub(crate) fn mark(extensions: &tonic::Extensions, flag: Flag) {
    if let Some(f) = extensions.get::<CallFlags>() {
        f.0.fetch_or(flag as u8, Ordering::Relaxed);
    }
}

/// Wraps the gRPC services with [`MetricsService`].
#[derive(Debug, Clone)]
pub(crate) struct MetricsLayer(pub(crate) Arc<Metrics>);

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// Counts every call through it; see the module's doc.
#[derive(Debug, Clone)]
pub(crate) struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Body + Unpin,
{
    type Response = http::Response<Counted<RB>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let flags = CallFlags::default();
        req.extensions_mut().insert(flags.clone());
        let mut call = Call {
            metrics: self.metrics.clone(),
            method: method_index(req.uri().path()),
            flags,
            done: false,
        };
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = match response.await {
                Ok(r) => r,
                Err(e) => {
                    call.finish(Code::Unknown);
                    return Err(e);
                }
            };
            // A trailers-only answer (every error of a unary call) carries the code in its
            // headers; otherwise it comes in the trailers.
            if let Some(code) = status_in(response.headers()) {
                call.finish(code);
            }
            Ok(response.map(|inner| Counted { inner, call }))
        })
    }
}

/// The `grpc-status` in `headers`, if any.
fn status_in(headers: &http::HeaderMap) -> Option<Code> {
    let v = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from(v))
}

/// One call in flight, recorded once.
#[derive(Debug)]
struct Call {
    metrics: Arc<Metrics>,
    method: usize,
    flags: CallFlags,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: Code) {
        if !self.done {
            self.done = true;
            let flags = self.flags.0.load(Ordering::Relaxed);
            self.metrics.record_call(self.method, code, flags);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // The body was dropped before its trailers: the client went away.
        self.finish(Code::Cancelled);
    }
}

/// A response body that records its call when the trailers pass (or it ends, or is
/// dropped).
#[derive(Debug)]
pub(crate) struct Counted<B> {
    inner: B,
    call: Call,
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(trailers) = f.trailers_ref() {
                    this.call
                        .finish(status_in(trailers).unwrap_or(Code::Unknown));
                }
            }
            Some(Err(_)) => this.call.finish(Code::Unknown),
            // Ended without a status: not a well-formed gRPC answer.
            None => this.call.finish(Code::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_method_is_listed() {
        let generated = include_str!("../../../proto/src/gen/machineid.v1.rs");
        let mut paths: Vec<&str> = generated
            .split('"')
            .filter(|s| s.starts_with("/machineid.v1.") && s.matches('/').count() == 2)
            .collect();
        paths.sort_unstable();
        paths.dedup();
        assert!(paths.len() >= 30, "{paths:?}");
        for p in &paths {
            assert!(method_index(p) < METHODS.len(), "{p} is not in METHODS");
        }
        assert_eq!(
            paths.len(),
            METHODS.len(),
            "METHODS lists a method the proto lacks"
        );
        assert_eq!(
            method_index("/machineid.v1.AuthService/Nope"),
            METHODS.len()
        );
        assert_eq!(method_index("/other.v1.AuthService/Ping"), METHODS.len());
    }

    #[test]
    fn codes_are_named_as_grpc_names_them() {
        for i in 0..17 {
            let code = Code::from(i);
            assert_ne!(code_name(code), "", "{i}");
        }
        assert_eq!(code_name(Code::from(7)), "PermissionDenied");
        assert_eq!(code_name(Code::from(99)), "Unknown");
    }
}
