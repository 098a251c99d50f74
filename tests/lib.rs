//! End-to-end test harness: starts real processes.
