//! The bot's signed request passes the server's checks, end to end in memory.

use std::time::SystemTime;

use machine_id_join::iam::{
    ChallengeLedger, GET_CALLER_IDENTITY_BODY, Scheme, StsAllowList, StsEndpoint,
    check_signed_request, parse_signed_request, sign_identity_request,
};

use crate::support::{creds, target};

#[test]
fn signed_request_passes_every_check() {
    let now = time::OffsetDateTime::now_utc();
    let ledger = ChallengeLedger::new();
    let challenge = ledger.issue(now).unwrap();
    for (url, host) in [
        ("https://sts.amazonaws.com", "sts.amazonaws.com"),
        (
            "https://sts.eu-west-1.amazonaws.com",
            "sts.eu-west-1.amazonaws.com",
        ),
        (
            "https://sts-fips.us-east-2.amazonaws.com",
            "sts-fips.us-east-2.amazonaws.com",
        ),
        ("http://127.0.0.1:5000", "127.0.0.1:5000"),
    ] {
        let allow = StsAllowList::aws_default()
            .with_extra([StsEndpoint::parse("http://127.0.0.1:5000").unwrap()]);
        let raw = sign_identity_request(
            &creds(),
            &target(url),
            challenge.as_str(),
            SystemTime::now(),
        )
        .unwrap();
        let req = parse_signed_request(&raw).unwrap();
        let ok = check_signed_request(&req, &challenge, &allow).unwrap();
        assert_eq!(ok.endpoint.host, host);
        assert_eq!(
            ok.endpoint.scheme,
            if url.starts_with("https") {
                Scheme::Https
            } else {
                Scheme::Http
            }
        );
        assert_eq!(ok.body, GET_CALLER_IDENTITY_BODY.as_bytes());
        let names: Vec<&str> = ok.headers.iter().map(|(n, _)| n.as_str()).collect();
        for h in [
            "host",
            "content-type",
            "accept",
            "x-teleport-challenge",
            "x-amz-date",
            "x-amz-security-token",
            "authorization",
            "content-length",
        ] {
            assert!(names.contains(&h), "{h} missing from {names:?}");
        }
    }
    ledger
        .redeem(&challenge, Some(challenge.as_str()), now)
        .unwrap();
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let now = time::OffsetDateTime::now_utc();
    let challenge = ChallengeLedger::new().issue(now).unwrap();
    let text = crate::support::signed("https://sts.amazonaws.com", challenge.as_str()).replacen(
        "\r\n",
        "\r\nconnection: keep-alive\r\nkeep-alive: timeout=5\r\n",
        1,
    );
    let req = parse_signed_request(text.as_bytes()).unwrap();
    let ok = check_signed_request(&req, &challenge, &StsAllowList::aws_default()).unwrap();
    assert!(!ok.headers.is_empty(), "the signed headers are kept");
    assert!(
        ok.headers
            .iter()
            .all(|(n, _)| n != "connection" && n != "keep-alive"),
        "{:?}",
        ok.headers
    );
}
