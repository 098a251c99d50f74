//! The generated code under `src/gen/` must match `proto/`. Regenerate with
//! `UPDATE_PROTO=1 cargo test -p machine-id-proto --test generated`.

use std::path::{Path, PathBuf};

fn generate(out: &Path) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["machineid/v1/types.proto", "machineid/v1/auth.proto"];
    let fds = protox::compile(files, [&root]).expect("proto/ compiles");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(out)
        .compile_fds(fds)
        .expect("code generation succeeds");
}

#[test]
fn generated_code_matches_proto_dir() {
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/gen");
    if std::env::var_os("UPDATE_PROTO").is_some() {
        generate(&committed);
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    generate(tmp.path());
    let fresh = std::fs::read_to_string(tmp.path().join("machineid.v1.rs")).expect("generated");
    let old = std::fs::read_to_string(committed.join("machineid.v1.rs")).unwrap_or_default();
    assert!(
        fresh == old,
        "crates/proto/src/gen/machineid.v1.rs is stale; run UPDATE_PROTO=1 cargo test -p machine-id-proto --test generated"
    );
}
