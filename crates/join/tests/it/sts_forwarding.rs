//! Forwarding to STS, against real HTTP servers on loopback.

use std::time::{Duration, Instant};

use machine_id_join::iam::{
    CallerIdentity, ChallengeLedger, GET_CALLER_IDENTITY_BODY, IamError, MAX_STS_BODY_BYTES,
    StsAllowList, StsClient, StsEndpoint, VerifiedRequest, check_signed_request,
    parse_caller_identity, parse_signed_request,
};

use crate::support::{FakeServer, JSON_IDENTITY, Reply, XML_IDENTITY, dead_port, serve, signed};

/// The bot's signed request, checked by the server's half, aimed at `url`.
fn verified(url: &str) -> (VerifiedRequest, String) {
    let challenge = ChallengeLedger::new()
        .issue(time::OffsetDateTime::now_utc())
        .unwrap();
    let req = parse_signed_request(signed(url, challenge.as_str()).as_bytes()).unwrap();
    let allow = StsAllowList::aws_default().with_extra([StsEndpoint::parse(url).unwrap()]);
    (
        check_signed_request(&req, &challenge, &allow).unwrap(),
        challenge.as_str().to_string(),
    )
}

fn expected() -> CallerIdentity {
    CallerIdentity {
        account: "123456789012".into(),
        arn: "arn:aws:sts::123456789012:assumed-role/bot-role/i-0abc".into(),
        user_id: "AROAEXAMPLE:i-0abc".into(),
    }
}

fn client() -> StsClient {
    StsClient::new(Duration::from_secs(5))
}

/// A bound that only catches a hang, far above anything a loaded machine takes.
const HANG: Duration = Duration::from_secs(120);

/// `fut`, or a panic naming `what` if it hangs.
async fn no_hang<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {HANG:?}"))
}

fn assert_forwarded(server: &FakeServer, challenge: &str) {
    let got = server.recorded();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/"));
    assert_eq!(r.header("x-teleport-challenge"), Some(challenge));
    assert_eq!(r.body, GET_CALLER_IDENTITY_BODY.as_bytes());
    assert_eq!(r.header("host"), Some(server.addr.to_string().as_str()));
    assert!(
        r.header("authorization")
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256 ")
    );
    assert_eq!(r.header("x-amz-security-token"), Some("SESSIONTOKEN"));
    assert!(r.header("x-amz-date").is_some());
    assert_eq!(r.header("content-length"), Some("43"));
    // Forwarded as signed: nothing added twice by the HTTP client.
    for name in [
        "host",
        "content-length",
        "authorization",
        "x-teleport-challenge",
    ] {
        let n = r.headers.iter().filter(|(h, _)| h == name).count();
        assert_eq!(n, 1, "{name} appears {n} times in {:?}", r.headers);
    }
}

#[tokio::test]
async fn good_xml_answer() {
    let server = serve(|_| Reply::ok("text/xml", XML_IDENTITY)).await;
    let (req, challenge) = verified(&server.url());
    assert_eq!(
        client().get_caller_identity(&req).await.unwrap(),
        expected()
    );
    assert_forwarded(&server, &challenge);
}

#[tokio::test]
async fn good_json_answer() {
    let server = serve(|_| Reply::ok("application/json", JSON_IDENTITY)).await;
    let (req, challenge) = verified(&server.url());
    assert_eq!(
        client().get_caller_identity(&req).await.unwrap(),
        expected()
    );
    assert_forwarded(&server, &challenge);
}

#[tokio::test]
async fn error_answer_carries_the_aws_code() {
    let server = serve(|_| {
        Reply::status(
            403,
            "text/xml",
            r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>InvalidClientTokenId</Code>
    <Message>The security token included in the request is invalid.</Message>
  </Error>
  <RequestId>x</RequestId>
</ErrorResponse>"#,
        )
    })
    .await;
    let (req, _) = verified(&server.url());
    let e = client().get_caller_identity(&req).await.unwrap_err();
    let IamError::StsRefused {
        status,
        code,
        message,
        ..
    } = &e
    else {
        panic!("{e}");
    };
    assert_eq!(*status, 403);
    assert_eq!(code.as_deref(), Some("InvalidClientTokenId"));
    assert_eq!(
        message.as_deref(),
        Some("The security token included in the request is invalid.")
    );
    assert!(e.to_string().contains("InvalidClientTokenId"), "{e}");
    assert!(e.to_string().contains("HTTP 403"), "{e}");
    assert!(e.to_string().contains("check the credentials"), "{e}");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn json_error_answer_and_5xx() {
    let server = serve(|_| {
        Reply::status(
            503,
            "application/json",
            r#"{"Error":{"Code":"ServiceUnavailable","Message":"try\nlater"}}"#,
        )
    })
    .await;
    let (req, _) = verified(&server.url());
    let e = client().get_caller_identity(&req).await.unwrap_err();
    assert!(
        matches!(&e, IamError::StsRefused { status: 503, code: Some(c), message: Some(m), .. } if c == "ServiceUnavailable" && m == "try later"),
        "{e:?}"
    );
    assert!(e.is_retryable());
    assert!(e.to_string().contains("retry the join later"), "{e}");
}

#[tokio::test]
async fn error_message_is_truncated() {
    let long = "x".repeat(5000);
    let body = format!(
        "<ErrorResponse><Error><Code>C</Code><Message>{long}</Message></Error></ErrorResponse>"
    );
    let server = serve(move |_| Reply::status(400, "text/xml", body.clone())).await;
    let (req, _) = verified(&server.url());
    let e = client().get_caller_identity(&req).await.unwrap_err();
    let IamError::StsRefused {
        message: Some(m), ..
    } = &e
    else {
        panic!("{e}");
    };
    assert!(m.len() <= 210, "{}", m.len());
}

#[tokio::test]
async fn huge_streamed_body() {
    let server = serve(|_| Reply::Endless).await;
    let (req, _) = verified(&server.url());
    // The client gives up on the size, not on its 5 s timeout (that would be `StsTimeout`).
    let e = no_hang(
        "reading an endless body",
        client().get_caller_identity(&req),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            IamError::StsBodyTooLarge {
                limit: MAX_STS_BODY_BYTES,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains(&format!(
            "STS answered more than {MAX_STS_BODY_BYTES} bytes"
        )),
        "{e}"
    );
}

#[tokio::test]
async fn huge_declared_body() {
    let server = serve(|_| Reply::DeclareHuge).await;
    let (req, _) = verified(&server.url());
    let e = client().get_caller_identity(&req).await.unwrap_err();
    assert!(matches!(e, IamError::StsBodyTooLarge { .. }), "{e}");
}

#[tokio::test]
async fn server_that_never_answers() {
    let server = serve(|_| Reply::Hang).await;
    let (req, _) = verified(&server.url());
    let started = Instant::now();
    let e = no_hang(
        "a request to a server that never answers",
        StsClient::new(Duration::from_millis(300)).get_caller_identity(&req),
    )
    .await
    .unwrap_err();
    // It waited the timeout it was given (a lower bound, which no load can break).
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(matches!(e, IamError::StsTimeout { .. }), "{e}");
    assert!(
        e.to_string().contains("STS did not answer within 300ms"),
        "{e}"
    );
    assert!(e.is_retryable());
}

#[tokio::test]
async fn unreachable() {
    let url = format!("http://127.0.0.1:{}", dead_port().await);
    let (req, _) = verified(&url);
    let e = client().get_caller_identity(&req).await.unwrap_err();
    assert!(matches!(e, IamError::StsUnreachable { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("cannot reach STS at {url}")),
        "{e}"
    );
    assert!(e.is_retryable());
}

#[tokio::test]
async fn malformed_answer() {
    let server = serve(|_| Reply::ok("text/html", "<html>hello</html>")).await;
    let (req, _) = verified(&server.url());
    let e = client().get_caller_identity(&req).await.unwrap_err();
    assert!(matches!(e, IamError::MalformedStsResponse { .. }), "{e}");
}

#[test]
fn caller_identity_parsing() {
    assert_eq!(
        parse_caller_identity(XML_IDENTITY.as_bytes()).unwrap(),
        expected()
    );
    assert_eq!(
        parse_caller_identity(JSON_IDENTITY.as_bytes()).unwrap(),
        expected()
    );
    // Entities and CDATA in XML.
    let xml = "<?xml version=\"1.0\"?><GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/a&amp;b</Arn><UserId><![CDATA[AIDA1]]></UserId><Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>";
    let id = parse_caller_identity(xml.as_bytes()).unwrap();
    assert_eq!(
        (id.arn.as_str(), id.user_id.as_str()),
        ("arn:aws:iam::123456789012:user/a&b", "AIDA1")
    );

    let bad: &[(&str, &str)] = &[
        ("", "neither JSON nor XML"),
        ("hello", "neither JSON nor XML"),
        ("{", "not valid JSON"),
        ("{}", "no GetCallerIdentityResponse"),
        (
            r#"{"GetCallerIdentityResponse":{"GetCallerIdentityResult":{"Arn":"arn:aws:iam::123456789012:user/a","UserId":"u"}}}"#,
            "no Account",
        ),
        (
            r#"{"GetCallerIdentityResponse":{"GetCallerIdentityResult":{"Account":"123456789012","UserId":"u"}}}"#,
            "no Arn",
        ),
        (
            r#"{"GetCallerIdentityResponse":{"GetCallerIdentityResult":{"Account":"123456789012","Arn":"arn:x"}}}"#,
            "no UserId",
        ),
        (
            r#"{"GetCallerIdentityResponse":{"GetCallerIdentityResult":{"Account":"12345","Arn":"arn:x","UserId":"u"}}}"#,
            "not 12 digits",
        ),
        (
            r#"{"GetCallerIdentityResponse":{"GetCallerIdentityResult":{"Account":"12345678901a","Arn":"arn:x","UserId":"u"}}}"#,
            "not 12 digits",
        ),
        (
            r#"{"GetCallerIdentityResponse":{"GetCallerIdentityResult":{"Account":"123456789012","Arn":"aws:x","UserId":"u"}}}"#,
            "does not start with arn:",
        ),
        (
            r#"{"GetCallerIdentityResponse":{"GetCallerIdentityResult":{"Account":123456789012,"Arn":"arn:x","UserId":"u"}}}"#,
            "no Account",
        ),
        (
            "<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:x</Arn></GetCallerIdentityResult>",
            "no Account",
        ),
        // Fields outside the result do not count.
        (
            "<GetCallerIdentityResponse><Account>123456789012</Account><Arn>arn:x</Arn><UserId>u</UserId></GetCallerIdentityResponse>",
            "no Account",
        ),
        ("<a><b></a>", "not well-formed"),
        (
            "<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:&bogus;</Arn>",
            "unknown entity",
        ),
    ];
    for (body, why) in bad {
        let e = parse_caller_identity(body.as_bytes()).unwrap_err();
        assert!(
            matches!(e, IamError::MalformedStsResponse { .. }),
            "{body}: {e}"
        );
        assert!(e.to_string().contains(why), "{why:?} not in {e}");
    }
    let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
    for body in [&[0xff, 0xfe][..], deep.as_bytes()] {
        let e = parse_caller_identity(body).unwrap_err();
        assert!(matches!(e, IamError::MalformedStsResponse { .. }), "{e}");
    }
}

#[test]
fn caller_identity_parser_never_panics() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for i in 0..20_000 {
        let src = if i % 2 == 0 {
            XML_IDENTITY
        } else {
            JSON_IDENTITY
        };
        let mut input = src.as_bytes().to_vec();
        for _ in 0..rng.gen_range(0..4) {
            if input.is_empty() {
                break;
            }
            let at = rng.gen_range(0..input.len());
            match rng.gen_range(0..3) {
                0 => input[at] = rng.r#gen(),
                1 => input.truncate(at),
                _ => input.insert(at, *b"<>&;\"{}".get(rng.gen_range(0..7)).unwrap()),
            }
        }
        let _ = parse_caller_identity(&input);
    }
}

#[tokio::test]
async fn https_endpoint_that_does_not_speak_tls() {
    // Exercises the TLS client (ring provider, web PKI roots): a plain HTTP server on the
    // other end fails the handshake, which is "cannot reach", not a refusal.
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let (req, _) = verified(&url);
    assert_eq!(req.endpoint.scheme, machine_id_join::iam::Scheme::Https);
    let e = client().get_caller_identity(&req).await.unwrap_err();
    assert!(matches!(e, IamError::StsUnreachable { .. }), "{e}");
    assert!(e.to_string().contains("TLS handshake failed"), "{e}");
}
