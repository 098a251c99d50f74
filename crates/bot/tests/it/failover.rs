//! A renewal whose answer is lost is sent again, byte for byte, and the auth server answers
//! it again without counting a second generation: through a relay that lets the request
//! reach the server and drops the answer, once failing over to another address of the list
//! within the same renewal, once retried by the bot's next renewal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use machine_id_client::Client;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::TestServer;

/// When armed, the relay drops the server's bytes (and closes the connection) from the first
/// one it reads after the bot's generation moved past `from`: the request got through and
/// was committed, the answer is lost.
struct Arm {
    admin: Client,
    user: String,
    from: u64,
}

/// A TCP relay in front of an auth server that can lose answers.
struct Relay {
    addr: String,
    arm: Arc<tokio::sync::Mutex<Option<Arm>>>,
    /// Set once an answer was dropped.
    dropped: Arc<AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: String) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let arm: Arc<tokio::sync::Mutex<Option<Arm>>> = Arc::default();
        let dropped = Arc::new(AtomicBool::new(false));
        let (a, d) = (arm.clone(), dropped.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(relay_one(client, server, a.clone(), d.clone()));
            }
        });
        Self {
            addr,
            arm,
            dropped,
            _task: task,
        }
    }

    async fn arm(&self, admin: &Client, user: &str) {
        let from = admin.get_user(user).await.unwrap().generation();
        *self.arm.lock().await = Some(Arm {
            admin: admin.clone(),
            user: user.to_string(),
            from,
        });
    }

    async fn disarm(&self) {
        *self.arm.lock().await = None;
    }
}

async fn relay_one(
    client: TcpStream,
    server: TcpStream,
    arm: Arc<tokio::sync::Mutex<Option<Arm>>>,
    dropped: Arc<AtomicBool>,
) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match server_rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let committed = match &*arm.lock().await {
            Some(a) => a.admin.get_user(&a.user).await.unwrap().generation() > a.from,
            None => false,
        };
        if committed {
            // The answer (or what follows the commit) is lost with the connection.
            dropped.store(true, Ordering::SeqCst);
            break;
        }
        if client_tx.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    up.abort();
}

#[tokio::test]
async fn a_renewal_whose_answer_is_lost_fails_over_and_counts_once() {
    let s = TestServer::start().await;
    let token = s.bot("robot", &["access"]).await;
    let relay = Relay::start(s.addr.clone()).await;
    let bot = s
        .builder(&token)
        .auth_servers([relay.addr.as_str(), s.addr.as_str()])
        .memory_destination(vec![])
        .build()
        .unwrap();
    bot.renew().await.unwrap();
    let g = bot.bot_identity().unwrap().generation;
    assert_eq!(s.admin.get_user("bot-robot").await.unwrap().generation(), g);

    relay.arm(&s.admin, "bot-robot").await;
    bot.renew().await.unwrap();
    assert!(
        relay.dropped.load(Ordering::SeqCst),
        "the renewal's answer was not dropped: the test proved nothing"
    );
    relay.disarm().await;
    // One generation more, on the bot and on the server, and nobody locked.
    assert_eq!(bot.bot_identity().unwrap().generation, g + 1);
    assert_eq!(
        s.admin.get_user("bot-robot").await.unwrap().generation(),
        g + 1
    );
    assert!(s.admin.list_locks().await.unwrap().is_empty());
    let events = s
        .admin
        .search_events(Some("cert.create"), 0, None)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.fields.get("retry").and_then(|v| v.as_bool()) == Some(true)),
        "the server answered the retry as a retry: {events:?}"
    );
    let st = bot.status();
    assert_eq!((st.renewals, st.failures), (2, 0));
    assert!(st.auth_failovers >= 1 && st.auth_retries >= 1, "{st:?}");
    // The certificate of the answered retry renews normally.
    bot.renew().await.unwrap();
    assert_eq!(bot.bot_identity().unwrap().generation, g + 2);
    assert!(s.admin.list_locks().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_bots_next_renewal_after_a_lost_answer_is_the_same_request() {
    let s = TestServer::start().await;
    let token = s.bot("robot", &["access"]).await;
    let relay = Relay::start(s.addr.clone()).await;
    let bot = s
        .builder(&token)
        .auth_server(&relay.addr)
        .memory_destination(vec![])
        .build()
        .unwrap();
    bot.renew().await.unwrap();
    let g = bot.bot_identity().unwrap().generation;

    relay.arm(&s.admin, "bot-robot").await;
    let e = bot.renew().await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(relay.dropped.load(Ordering::SeqCst));
    assert_eq!(bot.bot_identity().unwrap().generation, g, "no answer yet");
    relay.disarm().await;
    // The bot's retry presents the same certificate and the same pending key.
    bot.renew().await.unwrap();
    assert_eq!(bot.bot_identity().unwrap().generation, g + 1);
    assert_eq!(
        s.admin.get_user("bot-robot").await.unwrap().generation(),
        g + 1
    );
    assert!(s.admin.list_locks().await.unwrap().is_empty());
    let st = bot.status();
    assert_eq!((st.renewals, st.failures), (2, 1));
}
