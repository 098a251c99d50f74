//! `tctl create -f`'s reading of YAML resources (tokens with IAM allow rules, roles, ...).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = machine_id_types::parse_resources(text, "fuzz");
    }
});
