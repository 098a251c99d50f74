//! Integration tests of the IAM join method: both halves, real loopback HTTP servers, SigV4
//! known-answer vectors computed with botocore.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod credential_chain;
mod request_checks;
mod round_trip;
mod sigv4_kat;
mod sts_forwarding;
mod support;
