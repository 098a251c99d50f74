//! The minting figure measured in the same run: what this machine's crypto alone allows.

use std::time::Instant;

use machine_id_mint::{CaKeys, Identity, PrivateKey, Suite};
use time::OffsetDateTime;

use crate::BenchError;

/// Signs `pairs` certificate pairs in this process, on one core, as a renewal signs them (an
/// SSH user certificate from the Ed25519 user CA and an X.509 certificate from the P-256 TLS
/// CA, for a P-256 key), and returns certificates per second (two per pair). The same work
/// as the `mint` criterion bench, on a fresh throwaway CA.
pub(crate) async fn certs_per_second(pairs: usize) -> Result<f64, BenchError> {
    tokio::task::spawn_blocking(move || {
        let now = OffsetDateTime::now_utc();
        let ca = CaKeys::generate("bench.invalid", Suite::Default, now)?.signer()?;
        let subject = PrivateKey::generate(Suite::Default)?.public_key();
        let identity = Identity {
            username: "bot-bench-0".into(),
            roles: vec!["bot-bench-0".into()],
            logins: Vec::new(),
            traits: Default::default(),
            renewable: true,
            generation: 2,
            impersonator: None,
            disallow_reissue: false,
            cluster: "bench.invalid".into(),
            expires: now + time::Duration::hours(1),
        };
        let started = Instant::now();
        for _ in 0..pairs {
            std::hint::black_box(ca.sign_user_ssh_cert(&subject, &identity, now)?);
            std::hint::black_box(ca.sign_user_tls_cert(&subject, &identity, now)?);
        }
        let seconds = started.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
        Ok((2 * pairs) as f64 / seconds)
    })
    .await
    .map_err(|e| BenchError::Internal(format!("the minting task: {e}")))?
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn minting_signs_and_reports_a_rate() {
        let rate = super::certs_per_second(5).await.expect("mints");
        assert!(rate.is_finite() && rate > 0.0, "{rate}");
    }
}
