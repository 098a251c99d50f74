//! The diagnostics plumbing `tbot` and `auth-server` share, so neither writes it twice:
//!
//! - [`prometheus`]: the Prometheus text exposition format (`# HELP`, `# TYPE`, samples with
//!   escaped labels, histograms) and [`Histogram`], fixed buckets with atomic counts for hot
//!   paths.
//! - [`serve`]: a tiny plain-HTTP/1 server (hyper) that answers every `GET` with what a
//!   [`Handler`] returns for the path (`/healthz`, `/readyz`, `/metrics`, ...), until its
//!   future is dropped.
//!
//! It knows nothing of either program: the endpoints, their names and their rules belong to
//! the caller.
//!
//! ```no_run
//! use machine_id_diag::{Handler, Reply, prometheus::{Exposition, Kind}};
//!
//! #[derive(Clone)]
//! struct Hello;
//!
//! impl Handler for Hello {
//!     async fn respond(&self, path: &str) -> Reply {
//!         match path {
//!             "/healthz" => Reply::text(200, "ok\n"),
//!             "/metrics" => {
//!                 let mut e = Exposition::new();
//!                 e.family("hello_total", Kind::Counter, "Hellos said.");
//!                 e.sample("hello_total", &[], 1);
//!                 Reply::metrics(e.finish())
//!             }
//!             _ => Reply::not_found(),
//!         }
//!     }
//! }
//!
//! # async fn run() -> Result<(), machine_id_diag::DiagError> {
//! let (addr, serving) = machine_id_diag::serve("127.0.0.1:0", Hello).await?;
//! println!("diagnostics on http://{addr}/");
//! serving.await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod http;
pub mod prometheus;

pub use http::{DiagError, Handler, Reply, serve};
pub use prometheus::Histogram;
