//! The auth server's reading of the bot's serialized, signed `sts:GetCallerIdentity` request:
//! `parse_signed_request`, then (when it parses) `check_signed_request` against a challenge
//! and the default AWS STS allow-list.
//!
//! `Challenge` has no public constructor (only a ledger issues one, at random), so the target
//! issues one per process and swaps it in for the seeds' fixed placeholder challenge before
//! parsing: inputs that carry the placeholder reach the checks after the challenge, and a crash
//! reproduces whatever challenge the ledger drew (both have the same length).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use machine_id_join::iam::{
    Challenge, ChallengeLedger, StsAllowList, check_signed_request, parse_signed_request,
};

/// The challenge the seeds carry: base64 (no padding) of `fuzz-challenge-fuzz-challenge-01`.
const PLACEHOLDER: &[u8] = b"ZnV6ei1jaGFsbGVuZ2UtZnV6ei1jaGFsbGVuZ2UtMDE";

fn fixed() -> &'static (Challenge, StsAllowList) {
    static FIXED: OnceLock<(Challenge, StsAllowList)> = OnceLock::new();
    FIXED.get_or_init(|| {
        let challenge = ChallengeLedger::new()
            .issue(time::OffsetDateTime::UNIX_EPOCH)
            .expect("a fresh ledger issues a challenge");
        assert_eq!(challenge.as_str().len(), PLACEHOLDER.len());
        (challenge, StsAllowList::aws_default())
    })
}

fuzz_target!(|data: &[u8]| {
    let (challenge, allow) = fixed();
    let mut raw = data.to_vec();
    let mut i = 0;
    while let Some(at) = raw[i..]
        .windows(PLACEHOLDER.len())
        .position(|w| w == PLACEHOLDER)
    {
        let at = i + at;
        raw[at..at + PLACEHOLDER.len()].copy_from_slice(challenge.as_str().as_bytes());
        i = at + PLACEHOLDER.len();
    }
    if let Ok(req) = parse_signed_request(&raw) {
        let _ = check_signed_request(&req, challenge, allow);
    }
});
