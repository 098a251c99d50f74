//! Integration tests for machine-id-destination: one binary, one module per concern.

mod acl;
mod conformance;
mod crash;
mod directory;
mod ssh;
mod support;
mod symlinks;
