//! Integration tests of `machine-id-store`: the conformance suite on SQLite and on a real
//! PostgreSQL server (one per test binary, started by `pg_test`), then backend-specific
//! durability, faults and error handling.

// Tests fail loudly on unexpected errors.
#![allow(clippy::unwrap_used)]

mod conformance;
mod crash;
mod postgres;
mod postgres_events;
mod postgres_faults;
mod postgres_tls;
mod sqlite;
mod sqlite_events;
