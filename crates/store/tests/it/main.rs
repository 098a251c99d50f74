//! Integration tests of `machine-id-store`: the conformance suite on SQLite, then
//! SQLite-specific durability and error handling.

// Tests fail loudly on unexpected errors.
#![allow(clippy::unwrap_used)]

mod conformance;
mod crash;
mod sqlite;
