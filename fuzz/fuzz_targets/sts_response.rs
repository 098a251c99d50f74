//! The auth server's reading of STS's `GetCallerIdentity` answer, JSON or XML.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = machine_id_join::iam::parse_caller_identity(data);
});
