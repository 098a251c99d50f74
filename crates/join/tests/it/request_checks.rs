//! Every bad request is refused with its own error, named in the message.

use std::time::Duration;

use machine_id_join::iam::{
    Challenge, ChallengeLedger, IamError, MAX_REQUEST_BYTES, SignedRequest, StsAllowList,
    StsEndpoint, check_signed_request, parse_signed_request,
};
use rand::{Rng, SeedableRng};

use crate::support::signed;

const GLOBAL: &str = "https://sts.amazonaws.com";

fn t0() -> time::OffsetDateTime {
    time::macros::datetime!(2026-03-01 12:00 UTC)
}

fn fresh() -> (ChallengeLedger, Challenge) {
    let l = ChallengeLedger::new();
    let c = l.issue(t0()).unwrap();
    (l, c)
}

fn allow() -> StsAllowList {
    StsAllowList::aws_default()
}

/// Parses and checks `text` against `challenge`.
fn check(text: &str, challenge: &Challenge) -> Result<(), IamError> {
    let req = parse_signed_request(text.as_bytes())?;
    check_signed_request(&req, challenge, &allow()).map(|_| ())
}

/// Replaces the value of header `name` (the first occurrence).
fn set_header(text: &str, name: &str, value: &str) -> String {
    let mut out = Vec::new();
    let mut done = false;
    for line in text.split("\r\n") {
        if !done && line.to_ascii_lowercase().starts_with(&format!("{name}:")) {
            out.push(format!("{name}: {value}"));
            done = true;
        } else {
            out.push(line.to_string());
        }
    }
    assert!(done, "no header {name}");
    out.join("\r\n")
}

fn remove_header(text: &str, name: &str) -> String {
    text.split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with(&format!("{name}:")))
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn header<'a>(text: &'a str, name: &str) -> &'a str {
    text.split("\r\n")
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap()
}

/// Replaces the body (and Content-Length).
fn with_body(text: &str, body: &str) -> String {
    let (head, _) = text.split_once("\r\n\r\n").unwrap();
    let head = set_header(head, "content-length", &body.len().to_string());
    format!("{head}\r\n\r\n{body}")
}

fn assert_msg(e: &IamError, needle: &str) {
    assert!(e.to_string().contains(needle), "{needle:?} not in: {e}");
}

#[test]
fn good_request_passes() {
    let (_, c) = fresh();
    check(&signed(GLOBAL, c.as_str()), &c).unwrap();
}

// --- challenge ----------------------------------------------------------------------------

#[test]
fn challenge_missing() {
    let (l, c) = fresh();
    let text = remove_header(&signed(GLOBAL, c.as_str()), "x-teleport-challenge");
    let req = parse_signed_request(text.as_bytes()).unwrap();
    let e = l.redeem(&c, req.challenge(), t0()).unwrap_err();
    assert_eq!(e, IamError::ChallengeMissing);
    let e = check(&text, &c).unwrap_err();
    assert_eq!(e, IamError::ChallengeMissing);
    assert_msg(&e, "no X-Teleport-Challenge header");
}

#[test]
fn challenge_wrong() {
    let (l, c) = fresh();
    let text = signed(GLOBAL, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let req = parse_signed_request(text.as_bytes()).unwrap();
    let e = l.redeem(&c, req.challenge(), t0()).unwrap_err();
    assert_eq!(e, IamError::ChallengeWrong);
    assert_msg(&e, "wrong challenge");
    assert_eq!(check(&text, &c).unwrap_err(), IamError::ChallengeWrong);
}

#[test]
fn challenge_unsigned() {
    let (_, c) = fresh();
    let text = signed(GLOBAL, c.as_str());
    let auth = header(&text, "authorization").replace(";x-teleport-challenge", "");
    let e = check(&set_header(&text, "authorization", &auth), &c).unwrap_err();
    assert_eq!(e, IamError::ChallengeUnsigned);
    assert_msg(&e, "not signed");
}

#[test]
fn challenge_reused_second_redeem() {
    let (l, c) = fresh();
    l.redeem(&c, Some(c.as_str()), t0()).unwrap();
    let e = l.redeem(&c, Some(c.as_str()), t0()).unwrap_err();
    assert_eq!(e, IamError::ChallengeReused);
    assert_msg(&e, "reused");
}

#[test]
fn challenge_of_another_attempt() {
    let (l, mine) = fresh();
    let theirs = l.issue(t0()).unwrap();
    let text = signed(GLOBAL, theirs.as_str());
    let req = parse_signed_request(text.as_bytes()).unwrap();
    let e = l.redeem(&mine, req.challenge(), t0()).unwrap_err();
    assert_eq!(e, IamError::ChallengeOfAnotherAttempt);
    assert_msg(&e, "reused");
    assert_msg(&e, "another join attempt");
}

#[test]
fn challenge_expired() {
    let (l, c) = fresh();
    let e = l
        .redeem(&c, Some(c.as_str()), t0() + Duration::from_secs(61))
        .unwrap_err();
    assert!(matches!(e, IamError::ChallengeExpired { .. }), "{e}");
    assert_msg(&e, "expired");
    assert_msg(&e, "retry the join");
}

// --- checks -------------------------------------------------------------------------------

#[test]
fn host_not_allowed() {
    let (_, c) = fresh();
    let e = check(&signed("http://127.0.0.1:5000", c.as_str()), &c).unwrap_err();
    assert_eq!(
        e,
        IamError::HostNotAllowed {
            host: "127.0.0.1:5000".into()
        }
    );
    assert_msg(&e, "127.0.0.1:5000");
    assert_msg(&e, "extra_sts_endpoints");
    assert_msg(&e, "--extra-sts-endpoint");
    // Allowed once configured.
    let req = parse_signed_request(signed("http://127.0.0.1:5000", c.as_str()).as_bytes()).unwrap();
    let allow = allow().with_extra([StsEndpoint::parse("http://127.0.0.1:5000").unwrap()]);
    check_signed_request(&req, &c, &allow).unwrap();
    // A look-alike of an AWS host is not AWS.
    let e = check(
        &signed("https://sts.amazonaws.com.evil.example", c.as_str()),
        &c,
    )
    .unwrap_err();
    assert!(matches!(e, IamError::HostNotAllowed { .. }), "{e}");
}

#[test]
fn host_missing_and_unsigned() {
    let (_, c) = fresh();
    let text = signed(GLOBAL, c.as_str());
    assert_eq!(
        check(&remove_header(&text, "host"), &c).unwrap_err(),
        IamError::HostMissing
    );
    let auth = header(&text, "authorization").replace(";host;", ";");
    let e = check(&set_header(&text, "authorization", &auth), &c).unwrap_err();
    assert_eq!(e, IamError::HostUnsigned);
}

#[test]
fn get_is_refused() {
    let (_, c) = fresh();
    let text = signed(GLOBAL, c.as_str()).replacen("POST /", "GET /", 1);
    let e = check(&text, &c).unwrap_err();
    assert_eq!(
        e,
        IamError::MethodNotAllowed {
            method: "GET".into()
        }
    );
    assert_msg(&e, "only POST of sts:GetCallerIdentity is accepted");
}

#[test]
fn other_uri_is_refused() {
    let (_, c) = fresh();
    let text =
        signed(GLOBAL, c.as_str()).replacen("POST / ", "POST /?Action=GetCallerIdentity ", 1);
    let e = check(&text, &c).unwrap_err();
    assert!(matches!(e, IamError::WrongUri { .. }), "{e}");
    assert_msg(&e, "only POST /");
}

#[test]
fn another_action() {
    let (_, c) = fresh();
    let text = with_body(
        &signed(GLOBAL, c.as_str()),
        "Action=AssumeRole&Version=2011-06-15&RoleArn=x",
    );
    let e = check(&text, &c).unwrap_err();
    assert_eq!(
        e,
        IamError::WrongAction {
            action: "AssumeRole".into()
        }
    );
    assert_msg(&e, "only GetCallerIdentity");
}

#[test]
fn body_altered() {
    let (_, c) = fresh();
    for body in [
        "Action=GetCallerIdentity&Version=2011-06-16",
        "Action=GetCallerIdentity&Version=2011-06-15&X=1",
        "Version=2011-06-15&Action=GetCallerIdentity",
        "",
    ] {
        let text = with_body(&signed(GLOBAL, c.as_str()), body);
        let e = check(&text, &c).unwrap_err();
        assert_eq!(e, IamError::BodyAltered, "{body:?}");
        assert_msg(&e, "body was altered");
    }
}

#[test]
fn bad_algorithm() {
    let (_, c) = fresh();
    let text = signed(GLOBAL, c.as_str());
    let auth = header(&text, "authorization").replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256");
    let e = check(&set_header(&text, "authorization", &auth), &c).unwrap_err();
    assert_eq!(
        e,
        IamError::UnsupportedAlgorithm {
            algorithm: "AWS4-ECDSA-P256-SHA256".into()
        }
    );
    assert_msg(&e, "only AWS4-HMAC-SHA256");
}

#[test]
fn authorization_missing_or_malformed() {
    let (_, c) = fresh();
    let text = signed(GLOBAL, c.as_str());
    assert_eq!(
        check(&remove_header(&text, "authorization"), &c).unwrap_err(),
        IamError::AuthorizationMissing
    );
    let auth = header(&text, "authorization").to_string();
    let (_, sig) = auth.split_once("Signature=").unwrap();
    for (bad, why) in [
        (
            auth.replace("SignedHeaders=", "Signed="),
            "unknown parameter",
        ),
        (
            auth.replace(&format!(", Signature={sig}"), ""),
            "no Signature",
        ),
        (
            auth.replace(&format!("Signature={sig}"), "Signature=zz"),
            "64 hex",
        ),
        (auth.replace("/sts/", "/iam/"), "service sts"),
        (auth.replace("/aws4_request", ""), "Credential"),
        (format!("{auth}, Signature={sig}"), "twice"),
    ] {
        let e = check(&set_header(&text, "authorization", &bad), &c).unwrap_err();
        assert!(matches!(e, IamError::MalformedAuthorization { .. }), "{e}");
        assert_msg(&e, why);
        // The header's value (credential, signature) is never echoed.
        assert!(!e.to_string().contains(sig), "{e}");
    }
}

#[test]
fn checks_run_in_order() {
    // A request wrong in every way is refused for its URI first, then its method, and so on.
    let (_, c) = fresh();
    let req = SignedRequest {
        method: "GET".into(),
        uri: "/x".into(),
        headers: vec![("host".into(), "evil.example".into())],
        body: b"Action=AssumeRole".to_vec(),
    };
    assert!(matches!(
        check_signed_request(&req, &c, &allow()),
        Err(IamError::WrongUri { .. })
    ));
    let req = SignedRequest {
        uri: "/".into(),
        ..req
    };
    assert!(matches!(
        check_signed_request(&req, &c, &allow()),
        Err(IamError::MethodNotAllowed { .. })
    ));
    let req = SignedRequest {
        method: "POST".into(),
        ..req
    };
    assert!(matches!(
        check_signed_request(&req, &c, &allow()),
        Err(IamError::HostNotAllowed { .. })
    ));
    let req = SignedRequest {
        headers: vec![("host".into(), "sts.amazonaws.com".into())],
        ..req
    };
    assert_eq!(
        check_signed_request(&req, &c, &allow()),
        Err(IamError::ChallengeMissing)
    );
}

// --- malformed requests -------------------------------------------------------------------

fn parse_err(text: &str) -> IamError {
    parse_signed_request(text.as_bytes()).unwrap_err()
}

#[test]
fn oversize() {
    let (_, c) = fresh();
    let text = signed(GLOBAL, c.as_str()).replacen(
        "\r\n",
        &format!("\r\nx-pad: {}\r\n", "a".repeat(MAX_REQUEST_BYTES)),
        1,
    );
    let e = parse_err(&text);
    assert!(
        matches!(
            e,
            IamError::RequestTooLarge {
                max: MAX_REQUEST_BYTES,
                ..
            }
        ),
        "{e}"
    );
    assert_msg(&e, "more than the 16384 the server accepts");
}

#[test]
fn duplicate_headers() {
    let (_, c) = fresh();
    let text = signed(GLOBAL, c.as_str());
    for name in [
        "host",
        "content-length",
        "x-teleport-challenge",
        "authorization",
    ] {
        let line = format!("{name}: {}", header(&text, name));
        let dup = text.replacen(&line, &format!("{line}\r\n{}", line.to_uppercase()), 1);
        let e = parse_err(&dup);
        assert_eq!(e, IamError::DuplicateHeader { name: name.into() }, "{name}");
        assert_msg(&e, "more than once");
    }
}

#[test]
fn transfer_encoding() {
    let (_, c) = fresh();
    for te in ["chunked", "identity", "gzip, chunked"] {
        let text = signed(GLOBAL, c.as_str()).replacen(
            "\r\n",
            &format!("\r\nTransfer-Encoding: {te}\r\n"),
            1,
        );
        let e = parse_err(&text);
        assert_eq!(e, IamError::TransferEncodingRefused);
        assert_msg(&e, "Transfer-Encoding is not accepted");
    }
}

#[test]
fn truncated_body() {
    let (_, c) = fresh();
    let text = signed(GLOBAL, c.as_str());
    let cut = &text[..text.len() - 5];
    let e = parse_err(cut);
    assert_eq!(
        e,
        IamError::TruncatedBody {
            declared: 43,
            received: 38
        }
    );
    assert_msg(&e, "truncated");
    // Cut inside the headers.
    let e = parse_err(&text[..text.find("\r\n\r\n").unwrap()]);
    assert!(matches!(e, IamError::MalformedRequest { .. }), "{e}");
    assert_msg(&e, "no blank line");
}

#[test]
fn trailing_bytes() {
    let (_, c) = fresh();
    let text = format!("{}GET / HTTP/1.1\r\n\r\n", signed(GLOBAL, c.as_str()));
    let e = parse_err(&text);
    assert_eq!(
        e,
        IamError::TrailingBytes {
            declared: 43,
            extra: 18
        }
    );
}

#[test]
fn other_malformations() {
    let (_, c) = fresh();
    let good = signed(GLOBAL, c.as_str());
    let cases: Vec<(String, &str)> = vec![
        (
            good.replacen("\r\n", "\r\n x-folded: yes\r\n", 1),
            "obsolete line folding",
        ),
        (
            good.replacen("\r\n", "\r\nx-a: 1\nx-b: 2\r\n", 1),
            "bare LF",
        ),
        (good.replace("\r\n", "\n"), "bare LF"),
        (good.replacen("\r\n", "\r\nx-a: 1\r2\r\n", 1), "bare CR"),
        (
            good.replacen("\r\n", "\r\nx-a: a\u{1}b\r\n", 1),
            "control character",
        ),
        (good.replacen("\r\n", "\r\nx-a: é\r\n", 1), "non-ASCII"),
        (good.replacen("\r\n", "\r\nx-a : 1\r\n", 1), "not a token"),
        (
            good.replacen("\r\n", "\r\nno colon here\r\n", 1),
            "no colon",
        ),
        (good.replacen("HTTP/1.1", "HTTP/1.0", 1), "not HTTP/1.1"),
        (good.replacen("POST /", "POST  /", 1), "request line"),
        (good.replacen("POST /", "PO\"ST /", 1), "method"),
        (
            remove_header(&good, "content-length"),
            "without Content-Length",
        ),
        (set_header(&good, "content-length", "+43"), "not a decimal"),
        (
            set_header(&good, "content-length", "99999999999999999999"),
            "not a decimal",
        ),
        ("\r\n\r\n".to_string(), "request line"),
    ];
    for (text, why) in cases {
        let e = parse_err(&text);
        assert!(matches!(e, IamError::MalformedRequest { .. }), "{why}: {e}");
        assert_msg(&e, why);
    }
}

#[test]
fn header_names_are_lowercased_and_values_trimmed() {
    let (_, c) = fresh();
    let text = signed(GLOBAL, c.as_str()).replacen("\r\n", "\r\nX-Extra:  \tv a l \t\r\n", 1);
    let req = parse_signed_request(text.as_bytes()).unwrap();
    assert!(
        req.headers
            .iter()
            .any(|(n, v)| n == "x-extra" && v == "v a l")
    );
    assert_eq!(req.header("X-EXTRA"), Some("v a l"));
}

#[test]
fn parser_never_panics() {
    // A cheap stand-in for the fuzz target: random bytes, and random mutations, truncations
    // and splices of a good request.
    let (_, c) = fresh();
    let good = signed(GLOBAL, c.as_str()).into_bytes();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..20_000 {
        let mut input = if i % 4 == 0 {
            (0..rng.gen_range(0..300))
                .map(|_| rng.r#gen::<u8>())
                .collect()
        } else {
            good.clone()
        };
        for _ in 0..rng.gen_range(0..4) {
            if input.is_empty() {
                break;
            }
            let at = rng.gen_range(0..input.len());
            match rng.gen_range(0..4) {
                0 => input[at] = rng.r#gen(),
                1 => input.truncate(at),
                2 => {
                    input.remove(at);
                }
                _ => input.insert(at, *b"\r\n: \t\0".get(rng.gen_range(0..6)).unwrap()),
            }
        }
        if let Ok(req) = parse_signed_request(&input) {
            let _ = check_signed_request(&req, &c, &allow());
        }
    }
}
