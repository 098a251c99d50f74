//! TLS to PostgreSQL per `sslmode`, against the shared server, whose certificate is signed
//! by a test CA and names `localhost` only.

use machine_id_store::pg_test::{TEST_PASSWORD, TEST_USER, TempPostgres};
use machine_id_store::{Backend, PostgresBackend, StoreError};

/// A fresh database and a `key=value` connection string to it with `tls` appended.
fn conn(pg: &TempPostgres, host: &str, tls: &str) -> String {
    let uri = pg.create_fresh_database();
    let dbname = uri
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .unwrap()
        .to_owned();
    format!(
        "host={host} hostaddr=127.0.0.1 port={} user={TEST_USER} password={TEST_PASSWORD} \
         dbname={dbname} {tls}",
        pg.port()
    )
}

async fn works(conn: &str) {
    let store = PostgresBackend::connect(conn)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let r = store.put("/k", b"v".to_vec()).await.unwrap();
    assert_eq!(store.get("/k").await.unwrap().map(|i| i.revision), Some(r));
    let mut w = store.watch("/").await.unwrap();
    store.put("/k2", vec![]).await.unwrap();
    assert!(
        w.recv().await.is_some(),
        "the listener connects with TLS too"
    );
}

fn refused(result: Result<PostgresBackend, StoreError>) -> String {
    match result {
        Err(StoreError::Backend(message)) => message,
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_full_checks_chain_and_name() {
    let Some(pg) = TempPostgres::shared() else {
        return;
    };
    let ca = pg.ca_cert();
    let ca = ca.display();
    works(&conn(
        pg,
        "localhost",
        &format!("sslmode=verify-full sslrootcert='{ca}'"),
    ))
    .await;
    // The certificate names localhost, not 127.0.0.1.
    let message = refused(
        PostgresBackend::connect(&conn(
            pg,
            "127.0.0.1",
            &format!("sslmode=verify-full sslrootcert='{ca}'"),
        ))
        .await,
    );
    assert!(message.contains("TLS"), "{message}");
    assert!(message.contains("sslrootcert"), "{message}");
    assert!(!message.contains(TEST_PASSWORD), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_ca_checks_the_chain_only() {
    let Some(pg) = TempPostgres::shared() else {
        return;
    };
    let ca = pg.ca_cert();
    works(&conn(
        pg,
        "127.0.0.1",
        &format!("sslmode=verify-ca sslrootcert='{}'", ca.display()),
    ))
    .await;
    // A CA that did not sign the server's certificate: its own leaf stands in.
    let other_ca = ca.with_file_name("server.crt");
    let message = refused(
        PostgresBackend::connect(&conn(
            pg,
            "localhost",
            &format!("sslmode=verify-ca sslrootcert='{}'", other_ca.display()),
        ))
        .await,
    );
    assert!(
        message.contains("TLS") || message.contains("sslrootcert"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn require_encrypts_without_checking_and_uri_form_works() {
    let Some(pg) = TempPostgres::shared() else {
        return;
    };
    works(&conn(pg, "127.0.0.1", "sslmode=require")).await;
    let uri = pg.create_fresh_database().replace(
        "sslmode=disable",
        &format!("sslmode=verify-ca&sslrootcert={}", pg.ca_cert().display()),
    );
    works(&uri).await;
}

#[test]
fn verify_without_a_root_certificate_is_refused() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let message = refused(runtime.block_on(PostgresBackend::connect(
        "postgresql://u:secret@127.0.0.1:1/db?sslmode=verify-full",
    )));
    assert!(message.contains("need sslrootcert"), "{message}");
    let message = refused(runtime.block_on(PostgresBackend::connect(
        "postgresql://u:secret@127.0.0.1:1/db?sslmode=verify-full&sslrootcert=/no/such.pem",
    )));
    assert!(message.contains("/no/such.pem"), "{message}");
    assert!(!message.contains("secret"), "{message}");
}
