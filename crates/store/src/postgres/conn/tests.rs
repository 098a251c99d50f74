//! Unit tests of connection string parsing.
