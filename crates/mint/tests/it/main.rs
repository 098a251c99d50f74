//! Integration tests of machine-id-mint, judged by real peers: OpenSSH `ssh-keygen` and
//! `sshd`/`ssh`, OpenSSL `openssl verify` / `openssl x509`, and a rustls mTLS handshake.

mod common;
mod openssl;
mod ssh_keygen;
mod sshd;
mod tls_handshake;
