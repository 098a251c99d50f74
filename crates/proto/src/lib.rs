//! The Machine ID gRPC API: code generated from `proto/machineid/v1/*.proto` by
//! `tonic-prost-build` + `protox` and committed under `src/gen/` (so builds need no `protoc`),
//! and the conversions between wire messages and `machine-id-types` at the boundary.
//!
//! - [`v1`]: messages, `auth_service_{client,server}`, `join_service_{client,server}`.
//! - Conversions: `From<types::X> for v1::X` and `TryFrom<v1::X> for types::X` for roles,
//!   tokens, users, nodes, locks, bots and audit events; the `TryFrom` side validates, so
//!   a malformed message never becomes a domain value.
//!
//! The test `tests/generated.rs` fails when `src/gen/` drifts from `proto/`; regenerate with
//! `UPDATE_PROTO=1 cargo test -p machine-id-proto --test generated`.
#![forbid(unsafe_code)]

/// Generated messages and services of package `machineid.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)] // generated code
pub mod v1 {
    include!("gen/machineid.v1.rs");
}

mod convert;
pub use convert::{ConvertError, timestamp_from, timestamp_to};
