//! Integration tests: the real gRPC server in-process over TLS, driven by the generated tonic
//! clients.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod admin;
mod bot_certs;
mod diag;
mod events;
mod ha;
mod iam;
mod join;
mod limits;
mod locks;
mod nodes;
mod renew;
mod restart;
mod rotation;
mod support;
