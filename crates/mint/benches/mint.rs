//! Minting throughput: `cargo bench -p machine-id-mint`.
//!
//! One iteration is one certificate (or key). Figures are recorded in docs/PERFORMANCE.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use machine_id_mint::{CaKeys, Identity, PrivateKey, Suite};
use std::hint::black_box;
use time::{Duration, OffsetDateTime};

fn identity(now: OffsetDateTime) -> Identity {
    Identity {
        username: "bot-robot".into(),
        roles: vec!["bot-robot".into(), "access".into(), "editor".into()],
        logins: vec!["root".into(), "ubuntu".into()],
        traits: [("logins".to_string(), vec!["root".to_string()])].into(),
        renewable: true,
        generation: 42,
        impersonator: None,
        disallow_reissue: false,
        cluster: "example.com".into(),
        expires: now + Duration::hours(1),
    }
}

fn bench(c: &mut Criterion) {
    let now = OffsetDateTime::now_utc();
    let ca = CaKeys::generate("example.com", Suite::Default, now)
        .and_then(|k| k.signer())
        .expect("default cas");
    let subject = PrivateKey::generate(Suite::Default)
        .expect("subject key")
        .public_key();
    let id = identity(now);
    let principals = vec!["node1".to_string(), "node1.example.com".to_string()];

    let mut g = c.benchmark_group("mint");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ssh_user_cert_ed25519_ca", |b| {
        b.iter(|| ca.sign_user_ssh_cert(black_box(&subject), black_box(&id), now))
    });
    g.bench_function("ssh_host_cert_ed25519_ca", |b| {
        b.iter(|| {
            ca.sign_host_ssh_cert(
                black_box(&subject),
                &principals,
                now,
                now + Duration::hours(1),
            )
        })
    });
    g.bench_function("x509_user_cert_p256_ca_3_roles", |b| {
        b.iter(|| ca.sign_user_tls_cert(black_box(&subject), black_box(&id), now))
    });
    g.bench_function("keygen_p256", |b| {
        b.iter(|| PrivateKey::generate(Suite::Default))
    });
    g.bench_function("keygen_p256_and_pem", |b| {
        b.iter(|| PrivateKey::generate(Suite::Default).map(|k| k.to_pem()))
    });
    let der = ca
        .sign_user_tls_cert(&subject, &id, now)
        .expect("x509 cert");
    g.bench_function("parse_tls_identity", |b| {
        b.iter(|| machine_id_mint::parse_tls_identity(black_box(&der)))
    });
    g.finish();

    let legacy = CaKeys::generate("example.com", Suite::Legacy, now)
        .and_then(|k| k.signer())
        .expect("legacy cas");
    let rsa_subject = PrivateKey::generate(Suite::Legacy)
        .expect("rsa key")
        .public_key();
    let mut g = c.benchmark_group("mint_legacy");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.bench_function("ssh_user_cert_rsa2048_ca", |b| {
        b.iter(|| legacy.sign_user_ssh_cert(black_box(&rsa_subject), black_box(&id), now))
    });
    g.bench_function("x509_user_cert_rsa2048_ca", |b| {
        b.iter(|| legacy.sign_user_tls_cert(black_box(&rsa_subject), black_box(&id), now))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
