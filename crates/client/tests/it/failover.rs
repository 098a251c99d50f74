//! Failover between the addresses of an `AuthAddrs` list against a real auth server: dead
//! addresses are skipped and remembered, a server that goes away mid-use is left for the
//! next, and when all are dead the error names each.

use crate::TestServer;
use machine_id_client::{
    AuthAddrs, Client, ClientError, bootstrap_ca_certs, dial_proxy_ssh, parse_pins,
};
use tokio::net::TcpListener;

/// A loopback address nothing listens on (bound, then closed): connecting is refused.
async fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

/// A TCP relay to `target` on its own port, stopped (listener and every connection) by
/// aborting the returned task.
async fn relay(target: String) -> (String, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut inbound, _)) = l.accept().await else {
                return;
            };
            let target = target.clone();
            conns.spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_dead_first_address_is_skipped_and_then_not_tried_first() {
    let t = TestServer::start().await;
    let dead = dead_addr().await;
    let addrs = AuthAddrs::parse(&format!("{dead},{}", t.addr)).unwrap();
    let client = Client::connect(&addrs, &t.admin_identity()).await.unwrap();
    assert_eq!(client.addr(), t.addr);
    assert_eq!(client.ping().await.unwrap().cluster_name, "example.com");
    assert_eq!(addrs.preferred(), t.addr);
    assert_eq!(addrs.failovers(), 1);
    // The next connection starts at the server that answered: no attempt on the dead one.
    let again = Client::connect(&addrs, &t.admin_identity()).await.unwrap();
    again.list_roles().await.unwrap();
    assert_eq!(addrs.failovers(), 1);
    // The same through a plain comma-separated string, and for the join-side connection.
    let list = format!("{dead},{}", t.addr);
    Client::connect(list.as_str(), &t.admin_identity())
        .await
        .unwrap();
    let pins = parse_pins(&[t.server.ca_pins()[0].to_string()]).unwrap();
    let cas = bootstrap_ca_certs(list.as_str(), &pins).await.unwrap();
    let joiner = Client::connect_with_cas(list.as_str(), &cas).await.unwrap();
    joiner.ping().await.unwrap();
}

#[tokio::test]
async fn when_every_address_is_dead_the_error_names_each() {
    let t = TestServer::start().await;
    let (a, b) = (dead_addr().await, dead_addr().await);
    let addrs = AuthAddrs::parse(&format!("{a},{b}")).unwrap();
    let e = Client::connect(&addrs, &t.admin_identity())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::AllUnavailable { .. }), "{e:?}");
    assert!(e.is_retryable());
    let msg = e.to_string();
    assert!(
        msg.contains("cannot reach any of the auth servers"),
        "{msg}"
    );
    for addr in [&a, &b] {
        assert!(msg.contains(&format!("{addr}: ")), "{msg}");
    }
    assert!(msg.contains("refused"), "{msg}");
    let pins = parse_pins(&[t.server.ca_pins()[0].to_string()]).unwrap();
    let e = bootstrap_ca_certs(&addrs, &pins).await.unwrap_err();
    assert!(
        e.to_string().contains(&a) && e.to_string().contains(&b),
        "{e}"
    );
    let e = dial_proxy_ssh(&addrs, &t.admin_identity(), "node:22")
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::AllUnavailable { .. }), "{e:?}");
    // A single dead address keeps the error it always had.
    let e = Client::connect(a.as_str(), &t.admin_identity())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().ends_with("is it running?"), "{e}");
}

#[tokio::test]
async fn a_server_that_goes_away_mid_use_is_left_for_the_next() {
    let t = TestServer::start().await;
    let (via_relay, relay_task) = relay(t.addr.clone()).await;
    let addrs = AuthAddrs::parse(&format!("{via_relay},{}", t.addr)).unwrap();
    let client = Client::connect(&addrs, &t.admin_identity()).await.unwrap();
    assert_eq!(client.addr(), via_relay);
    client.list_roles().await.unwrap();
    // The first server dies: its listener and its connections.
    relay_task.abort();
    let _ = relay_task.await;
    let roles = client.list_roles().await.unwrap();
    assert!(!roles.is_empty());
    assert_eq!(client.addr(), t.addr, "clones now use the live server");
    assert!(addrs.failovers() >= 1);
    assert!(addrs.retries() >= 1);
    // A write that must not repeat goes straight to the live server now.
    let created = client
        .create_bot("robot", &[], &[], None, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(created.bot.name, "robot");
}

#[tokio::test]
async fn refusals_are_final_and_bad_lists_are_refused_before_dialing() {
    let t = TestServer::start().await;
    let dead = dead_addr().await;
    let client = Client::connect(format!("{},{dead}", t.addr).as_str(), &t.admin_identity())
        .await
        .unwrap();
    let e = client.get_role("no-such-role").await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert_eq!(
        client.addrs().failovers(),
        0,
        "a refusal is not failed over"
    );
    let e = Client::connect("a:1,,b:1", &t.admin_identity())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::BadAddress { .. }), "{e:?}");
    assert!(e.to_string().contains("remove the extra comma"), "{e}");
}
