//! The `iam` join method through the real gRPC stream of an in-process server, with a fake STS
//! on loopback that answers as told (the guide's flow against moto is in the e2e suite; moto
//! cannot be made to time out, answer huge bodies or refuse). Every bad input is refused with
//! its own message, audited, never forwarded to STS unless it passed the checks, and leaves
//! the token usable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use machine_id_join::iam::{AwsCredentials, StsEndpoint, StsTarget, sign_identity_request};
use machine_id_proto::v1::{
    self, join_service_client::JoinServiceClient, register_using_iam_method_response::Response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use crate::support::*;

const ACCOUNT: &str = "111111111111";
const ROLE_ARN: &str = "arn:aws:sts::111111111111:assumed-role/teleport-bot-role/i-0abc";

/// What the fake STS answers.
#[derive(Clone)]
enum Answer {
    /// 200 with a GetCallerIdentityResponse (XML, as moto and AWS answer by default).
    Identity { account: String, arn: String },
    /// 403 with an AWS ErrorResponse.
    Refuse,
    /// 200 with a body far over the server's limit, streamed.
    Huge,
    /// Reads the request and never answers.
    Silent,
}

/// A fake STS on 127.0.0.1:0 that counts the requests it received and keeps the last one.
struct FakeSts {
    url: String,
    answer: Arc<Mutex<Answer>>,
    received: Arc<AtomicUsize>,
    last: Arc<Mutex<Vec<u8>>>,
}

impl FakeSts {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let answer = Arc::new(Mutex::new(Answer::Identity {
            account: ACCOUNT.into(),
            arn: ROLE_ARN.into(),
        }));
        let received = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(Mutex::new(Vec::new()));
        let (a, r, l) = (answer.clone(), received.clone(), last.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (a, r, l) = (a.clone(), r.clone(), l.clone());
                tokio::spawn(async move {
                    let req = read_request(&mut sock).await;
                    r.fetch_add(1, Ordering::SeqCst);
                    *l.lock().unwrap() = req;
                    let answer = a.lock().unwrap().clone();
                    match answer {
                        Answer::Identity { account, arn } => {
                            let body = format!(
                                "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Arn>{arn}</Arn><UserId>AROAEXAMPLE:i-0abc</UserId><Account>{account}</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></GetCallerIdentityResponse>"
                            );
                            respond(&mut sock, "200 OK", body.as_bytes()).await;
                        }
                        Answer::Refuse => {
                            let body = b"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error></ErrorResponse>";
                            respond(&mut sock, "403 Forbidden", body).await;
                        }
                        Answer::Huge => {
                            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 8388608\r\n\r\n";
                            let _ = sock.write_all(head.as_bytes()).await;
                            let chunk = vec![b'x'; 64 * 1024];
                            for _ in 0..128 {
                                if sock.write_all(&chunk).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Answer::Silent => {
                            let mut b = [0u8; 1];
                            let _ = sock.read(&mut b).await;
                        }
                    }
                });
            }
        });
        Self {
            url,
            answer,
            received,
            last,
        }
    }

    fn set(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    fn target(&self) -> StsTarget {
        StsTarget {
            url: self.url.clone(),
            region: "us-east-1".into(),
        }
    }
}

/// Reads one HTTP request (head and Content-Length body).
async fn read_request(sock: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = sock.read(&mut chunk).await else {
            return buf;
        };
        if n == 0 {
            return buf;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return buf;
            }
        }
    }
}

async fn respond(sock: &mut tokio::net::TcpStream, status: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body).await;
}

fn creds() -> AwsCredentials {
    AwsCredentials {
        access_key_id: "ASIAEXAMPLE".into(),
        secret_access_key: "secret".into(),
        session_token: Some("session".into()),
    }
}

/// One attempt over the raw stream: `make` turns the challenge into the bytes to send;
/// `before_send` runs between receiving the challenge and sending (to move the clock).
async fn attempt_with(
    join: &mut JoinServiceClient<Channel>,
    token: &str,
    make: impl FnOnce(&str) -> Vec<u8>,
    before_send: impl FnOnce(),
) -> Result<BotIdentity, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut inbound = join
        .register_using_iam_method(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let Some(v1::RegisterUsingIamMethodResponse {
        response: Some(Response::Challenge(challenge)),
    }) = inbound.message().await?
    else {
        panic!("the server did not send a challenge first");
    };
    // 32 random bytes, base64 without padding.
    assert_eq!(challenge.len(), 43, "{challenge}");
    assert!(!challenge.ends_with('='));
    before_send();
    let key = new_key();
    tx.send(v1::RegisterUsingIamMethodRequest {
        token: token.into(),
        public_key: key.public_key().to_spki_der(),
        ttl_seconds: 0,
        sts_identity_request: make(&challenge),
    })
    .await
    .unwrap();
    match inbound.message().await? {
        Some(v1::RegisterUsingIamMethodResponse {
            response: Some(Response::Certs(certs)),
        }) => Ok(BotIdentity { key, certs }),
        other => panic!("unexpected answer {other:?}"),
    }
}

async fn attempt(
    join: &mut JoinServiceClient<Channel>,
    token: &str,
    make: impl FnOnce(&str) -> Vec<u8>,
) -> Result<BotIdentity, tonic::Status> {
    attempt_with(join, token, make, || {}).await
}

fn signed(target: &StsTarget, challenge: &str) -> Vec<u8> {
    sign_identity_request(&creds(), target, challenge, SystemTime::now()).unwrap()
}

/// Replaces `from` by `to` in the serialized request (text surgery for bad inputs).
fn edit(raw: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    let s = String::from_utf8(raw).unwrap();
    assert!(s.contains(from), "{from:?} not in {s}");
    s.replacen(from, to, 1).into_bytes()
}

/// Replaces the body and fixes Content-Length, keeping the signature of the old body.
fn with_body(raw: Vec<u8>, body: &str) -> Vec<u8> {
    let s = String::from_utf8(raw).unwrap();
    let (head, _) = s.split_once("\r\n\r\n").unwrap();
    let head: Vec<String> = head
        .split("\r\n")
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") {
                format!("content-length: {}", body.len())
            } else {
                l.to_string()
            }
        })
        .collect();
    format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes()
}

async fn start_with_sts(sts: &FakeSts, sts_timeout: Duration) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(machine_id_types::FakeClock::new(
        time::OffsetDateTime::now_utc(),
    ));
    let mut config = machine_id_auth::AuthConfig::new(
        dir.path().join("data"),
        CLUSTER,
        "127.0.0.1:0".parse().unwrap(),
    );
    config.clock = clock.clone();
    config.extra_sts_endpoints = vec![StsEndpoint::parse(&sts.url).unwrap()];
    config.sts_timeout = sts_timeout;
    let server = machine_id_auth::AuthServer::start(config).await.unwrap();
    TestServer {
        server: Some(server),
        dir,
        clock,
    }
}

/// Creates the iam token `name` for bot `bot` with `rules` (account, arn glob) and the bot.
async fn iam_bot(t: &TestServer, name: &str, bot: &str, rules: &[(&str, &str)]) {
    let mut admin = t.admin().await;
    admin
        .upsert_token(v1::UpsertTokenRequest {
            token: Some(v1::Token {
                metadata: Some(v1::Metadata {
                    name: name.into(),
                    ..Default::default()
                }),
                roles: vec!["Bot".into()],
                join_method: "iam".into(),
                bot_name: Some(bot.into()),
                allow: rules
                    .iter()
                    .map(|(account, arn)| v1::TokenRule {
                        aws_account: (!account.is_empty()).then(|| account.to_string()),
                        aws_arn: (!arn.is_empty()).then(|| arn.to_string()),
                    })
                    .collect(),
            }),
            create_only: false,
        })
        .await
        .unwrap();
    admin
        .create_bot(v1::CreateBotRequest {
            name: bot.into(),
            roles: vec!["access".into()],
            token_name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn iam_join_issues_non_renewable_certs_and_keeps_the_token() {
    let sts = FakeSts::start().await;
    let t = start_with_sts(&sts, Duration::from_secs(10)).await;
    iam_bot(
        &t,
        "iam-token",
        "robot",
        &[(
            ACCOUNT,
            "arn:aws:sts::111111111111:assumed-role/teleport-bot-role/i-*",
        )],
    )
    .await;
    let (_, mut join) = t.anonymous().await;
    let target = sts.target();
    let id = attempt(&mut join, "iam-token", |c| signed(&target, c))
        .await
        .unwrap();
    let identity = id.identity();
    assert_eq!(identity.username, "bot-robot");
    assert!(!identity.renewable, "iam certificates are not renewable");
    // STS saw the request as the bot signed it: challenge header and exact body.
    let fwd = String::from_utf8(sts.last.lock().unwrap().clone()).unwrap();
    assert!(
        fwd.to_ascii_lowercase().contains("x-teleport-challenge:"),
        "{fwd}"
    );
    assert!(
        fwd.ends_with("Action=GetCallerIdentity&Version=2011-06-15"),
        "{fwd}"
    );

    // The certificate works for calls, but not for renewal.
    let mut client = t.client(&id).await;
    assert_code(
        generate(&mut client, &[], 0).await,
        tonic::Code::PermissionDenied,
        "not renewable",
    );
    // Outputs (impersonation) work as with a token join.
    let out = generate(&mut client, &["access"], 0).await.unwrap();
    assert_eq!(out.identity().impersonator.as_deref(), Some("bot-robot"));

    // The token stays: a second join (the next "renewal") works too.
    attempt(&mut join, "iam-token", |c| signed(&target, c))
        .await
        .unwrap();
    assert_eq!(sts.received(), 2);

    let mut admin = t.admin().await;
    let joins = events(&mut admin, machine_id_types::event_types::BOT_JOIN).await;
    assert_eq!(joins.len(), 2);
    let fields: serde_json::Value = serde_json::from_str(&joins[0].fields_json).unwrap();
    assert_eq!(fields["method"], "iam");
    assert_eq!(fields["aws_arn"], ROLE_ARN);
}

#[tokio::test]
async fn a_locked_bot_cannot_join_with_iam() {
    let sts = FakeSts::start().await;
    let t = start_with_sts(&sts, Duration::from_secs(10)).await;
    iam_bot(&t, "iam-token", "robot", &[(ACCOUNT, "")]).await;
    let mut admin = t.admin().await;
    let lock = admin
        .lock_bot(v1::LockBotRequest {
            name: "robot".into(),
            message: "decommissioned host".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let (_, mut join) = t.anonymous().await;
    let target = sts.target();
    let msg = assert_code(
        attempt(&mut join, "iam-token", |c| signed(&target, c)).await,
        tonic::Code::PermissionDenied,
        "decommissioned host",
    );
    assert!(msg.contains("bot-robot"), "{msg}");
    let failed = events(&mut admin, machine_id_types::event_types::JOIN_FAILED).await;
    assert_eq!(failed.len(), 1, "the refusal is audited");
    assert!(
        events(&mut admin, machine_id_types::event_types::BOT_JOIN)
            .await
            .is_empty()
    );

    // Lifted, the same token joins.
    admin
        .delete_lock(v1::GetByNameRequest {
            name: lock.metadata.unwrap().name,
        })
        .await
        .unwrap();
    let id = attempt(&mut join, "iam-token", |c| signed(&target, c))
        .await
        .unwrap();
    assert_eq!(id.identity().username, "bot-robot");
}

#[tokio::test]
async fn iam_rules_by_account_by_arn_and_first_match() {
    let sts = FakeSts::start().await;
    let t = start_with_sts(&sts, Duration::from_secs(10)).await;
    iam_bot(&t, "by-account", "acct", &[(ACCOUNT, "")]).await;
    iam_bot(
        &t,
        "by-arn",
        "arnbot",
        &[("", "arn:aws:sts::*:assumed-role/teleport-bot-role/i-????")],
    )
    .await;
    iam_bot(
        &t,
        "other",
        "otherbot",
        &[
            ("222222222222", ""),
            ("", "arn:aws:sts::*:assumed-role/ci-*"),
        ],
    )
    .await;
    let (_, mut join) = t.anonymous().await;
    let target = sts.target();
    attempt(&mut join, "by-account", |c| signed(&target, c))
        .await
        .unwrap();
    // `?` is one character: i-0abc has four after `i-`.
    attempt(&mut join, "by-arn", |c| signed(&target, c))
        .await
        .unwrap();
    // Neither rule of `other` matches (another account; another role): refused, naming the
    // ARN and the token.
    let msg = assert_code(
        attempt(&mut join, "other", |c| signed(&target, c)).await,
        tonic::Code::PermissionDenied,
        "instance did not match any allow rules",
    );
    assert!(msg.contains(ROLE_ARN) && msg.contains("\"other\""), "{msg}");
    // The second rule of `other` matches an ARN of the ci role.
    sts.set(Answer::Identity {
        account: "333333333333".into(),
        arn: "arn:aws:sts::333333333333:assumed-role/ci-runner/job-7".into(),
    });
    attempt(&mut join, "other", |c| signed(&target, c))
        .await
        .unwrap();
}

/// Every bad input of the issue: a distinct message, an audit event, nothing sent to STS
/// before the checks pass, and the token usable afterwards.
#[tokio::test]
async fn iam_bad_inputs_are_refused_audited_and_leave_the_token() {
    let sts = FakeSts::start().await;
    let t = start_with_sts(&sts, Duration::from_millis(500)).await;
    iam_bot(&t, "iam-token", "robot", &[(ACCOUNT, "")]).await;
    let token_bot = t.add_bot("tokenbot", &["access"], &[]).await;
    let (_, mut join) = t.anonymous().await;
    let target = sts.target();
    let evil = StsTarget {
        url: "https://sts.evil.example.com".into(),
        region: "us-east-1".into(),
    };
    let mut expected_failures = 0;

    // Refused before STS: (what, bytes maker, message fragment).
    type Maker = Box<dyn FnOnce(&str) -> Vec<u8>>;
    let t2 = target.clone();
    let t3 = target.clone();
    let t4 = target.clone();
    let t5 = target.clone();
    let t6 = target.clone();
    let t7 = target.clone();
    let t8 = target.clone();
    let cases: Vec<(&str, Maker, &str)> = vec![
        (
            "challenge missing",
            Box::new(move |c| {
                edit(
                    signed(&t2, c),
                    &format!("x-teleport-challenge: {c}\r\n"),
                    "",
                )
            }),
            "no X-Teleport-Challenge header",
        ),
        (
            "challenge wrong",
            Box::new(move |_| signed(&t3, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
            "wrong challenge",
        ),
        (
            "challenge unsigned",
            Box::new(move |c| edit(signed(&t4, c), ";x-teleport-challenge", "")),
            "challenge is not signed",
        ),
        (
            "host not allowed",
            Box::new(move |c| signed(&evil, c)),
            "not an allowed STS endpoint",
        ),
        (
            "GET",
            Box::new(move |c| edit(signed(&t5, c), "POST / HTTP/1.1", "GET / HTTP/1.1")),
            "only POST",
        ),
        (
            "another action",
            Box::new(move |c| with_body(signed(&t6, c), "Action=AssumeRole&Version=2011-06-15")),
            "only GetCallerIdentity",
        ),
        (
            "body altered",
            Box::new(move |c| {
                with_body(
                    signed(&t7, c),
                    "Action=GetCallerIdentity&Version=2011-06-15&Extra=1",
                )
            }),
            "body was altered",
        ),
        (
            "algorithm",
            Box::new(move |c| edit(signed(&t8, c), "AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1")),
            "only AWS4-HMAC-SHA256",
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (what, make, needle) in cases {
        let msg = assert_code(
            attempt(&mut join, "iam-token", make).await,
            tonic::Code::PermissionDenied,
            needle,
        );
        assert!(seen.insert(msg), "{what}: message not distinct");
        expected_failures += 1;
    }
    assert_eq!(sts.received(), 0, "a bad request reached STS");

    // Reused: the challenge of an earlier attempt, on a new attempt.
    // (The earlier attempt sends something that is not HTTP at all: told so.)
    let mut first = String::new();
    let msg = assert_code(
        attempt(&mut join, "iam-token", |c| {
            first = c.to_string();
            b"not http".to_vec()
        })
        .await,
        tonic::Code::PermissionDenied,
        "malformed signed request",
    );
    assert!(seen.insert(msg));
    expected_failures += 1;
    let msg = assert_code(
        attempt(&mut join, "iam-token", |_| signed(&target, &first)).await,
        tonic::Code::PermissionDenied,
        "challenge was reused",
    );
    assert!(seen.insert(msg));
    expected_failures += 1;

    // Expired: answered 61 s (of the server's clock) after the challenge.
    let clock = t.clock.clone();
    let msg = assert_code(
        attempt_with(
            &mut join,
            "iam-token",
            |c| signed(&target, c),
            || clock.advance(Duration::from_secs(61)),
        )
        .await,
        tonic::Code::PermissionDenied,
        "challenge expired",
    );
    assert!(seen.insert(msg));
    expected_failures += 1;

    // A token of another join method.
    let msg = assert_code(
        attempt(&mut join, &token_bot, |c| signed(&target, c)).await,
        tonic::Code::PermissionDenied,
        "join method token",
    );
    assert!(seen.insert(msg));
    expected_failures += 1;
    assert_eq!(sts.received(), 0, "a bad request reached STS");

    // STS trouble: refused, a huge body, no answer in time. These were forwarded.
    for (answer, code, needle) in [
        (
            Answer::Refuse,
            tonic::Code::PermissionDenied,
            "InvalidClientTokenId",
        ),
        (Answer::Huge, tonic::Code::PermissionDenied, "more than"),
        (
            Answer::Silent,
            tonic::Code::Unavailable,
            "did not answer within",
        ),
    ] {
        sts.set(answer);
        let msg = assert_code(
            attempt(&mut join, "iam-token", |c| signed(&target, c)).await,
            code,
            needle,
        );
        assert!(seen.insert(msg));
        expected_failures += 1;
    }
    assert_eq!(sts.received(), 3);
    // A timeout is marked as STS trouble, so clients do not blame the auth server.
    sts.set(Answer::Silent);
    let status = attempt(&mut join, "iam-token", |c| signed(&target, c))
        .await
        .err()
        .unwrap();
    assert_eq!(
        status
            .metadata()
            .get("x-machine-id-upstream")
            .and_then(|v| v.to_str().ok()),
        Some("sts")
    );
    expected_failures += 1;

    // An ARN of another account.
    sts.set(Answer::Identity {
        account: "222222222222".into(),
        arn: "arn:aws:sts::222222222222:assumed-role/teleport-bot-role/i-0abc".into(),
    });
    let msg = assert_code(
        attempt(&mut join, "iam-token", |c| signed(&target, c)).await,
        tonic::Code::PermissionDenied,
        "instance did not match any allow rules",
    );
    assert!(
        msg.contains("222222222222") && msg.contains("iam-token"),
        "{msg}"
    );
    expected_failures += 1;

    // Every refusal is audited, with its reason.
    let mut admin = t.admin().await;
    let failed = events(&mut admin, machine_id_types::event_types::JOIN_FAILED).await;
    assert_eq!(failed.len(), expected_failures, "{failed:#?}");
    for m in &seen {
        assert!(
            failed.iter().any(|e| &e.message == m),
            "no audit event for {m:?}"
        );
    }

    // The token is still usable.
    sts.set(Answer::Identity {
        account: ACCOUNT.into(),
        arn: ROLE_ARN.into(),
    });
    attempt(&mut join, "iam-token", |c| signed(&target, c))
        .await
        .unwrap();
}

/// Back-pressure: with `max_in_flight_requests: 1`, an IAM join waiting on a silent STS holds
/// the only place, and another call is answered UNAVAILABLE ("overloaded", nothing done) while
/// the join is still in flight, instead of queueing behind it; once the join is gone the
/// server serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_server_refuses_at_once_instead_of_queueing() {
    let sts = FakeSts::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = machine_id_auth::AuthConfig::new(
        dir.path().join("data"),
        CLUSTER,
        "127.0.0.1:0".parse().unwrap(),
    );
    config.extra_sts_endpoints = vec![StsEndpoint::parse(&sts.url).unwrap()];
    config.sts_timeout = Duration::from_secs(60);
    config.max_in_flight_requests = 1;
    let t = TestServer {
        server: Some(machine_id_auth::AuthServer::start(config).await.unwrap()),
        dir,
        clock: Arc::new(machine_id_types::FakeClock::new(
            time::OffsetDateTime::now_utc(),
        )),
    };
    iam_bot(&t, "iam-token", "robot", &[(ACCOUNT, "")]).await;
    sts.set(Answer::Silent);
    let (_, mut join) = t.anonymous().await;
    let target = sts.target();
    let holder =
        tokio::spawn(async move { attempt(&mut join, "iam-token", |c| signed(&target, c)).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sts.received() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the join never reached STS"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut admin = t.admin().await;
    let refused = admin.list_roles(v1::ListRequest {}).await;
    assert!(!holder.is_finished(), "the join still holds its place");
    let msg = assert_code(refused, tonic::Code::Unavailable, "overloaded");
    assert!(
        msg.contains("limits.max_in_flight_requests") && msg.contains("nothing was done"),
        "{msg}"
    );

    // The join goes away (its client gave up): its place is free again.
    holder.abort();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match admin.list_roles(v1::ListRequest {}).await {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::Unavailable => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the abandoned join's place was not freed: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}
