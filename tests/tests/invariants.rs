//! Cheap mechanical checks of the invariants in docs/ARCHITECTURE.md.

use std::process::Command;

/// The names of the packages in `package`'s normal dependency tree.
fn dependency_names(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn pure_crates_know_nothing_of_grpc() {
    for package in [
        "machine-id-types",
        "machine-id-mint",
        "machine-id-join",
        "machine-id-store",
        "machine-id-destination",
    ] {
        let deps = dependency_names(package);
        assert!(deps.len() > 1, "cargo tree listed nothing for {package}");
        // `join` speaks plain HTTP/1.1 to AWS STS and instance metadata (hyper's http1
        // client); gRPC's HTTP/2 (`h2`) stays out of it like out of the others.
        let http_client_allowed = package == "machine-id-join";
        for forbidden in ["tonic", "prost", "machine-id-proto", "h2", "hyper"] {
            if forbidden == "hyper" && http_client_allowed {
                continue;
            }
            assert!(
                !deps.iter().any(|d| d == forbidden),
                "{package} depends on {forbidden}; see docs/ARCHITECTURE.md"
            );
        }
    }
}

#[test]
fn only_client_and_auth_touch_proto() {
    for package in ["tctl-bots", "auth-server", "tbot", "tsh", "machine-id-bot"] {
        let direct = Command::new(env!("CARGO"))
            .args([
                "tree",
                "--offline",
                "-e",
                "normal",
                "--depth",
                "1",
                "--prefix",
                "none",
                "-p",
                package,
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo tree runs");
        let text = String::from_utf8_lossy(&direct.stdout);
        assert!(
            text.contains(package),
            "cargo tree printed nothing for {package}"
        );
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("machine-id-proto ") || l.starts_with("tonic ")),
            "{package} depends on proto/tonic directly; go through client or auth"
        );
    }
}

#[test]
fn rustls_has_only_the_ring_provider() {
    let deps = dependency_names("machine-id-auth");
    assert!(deps.iter().any(|d| d == "rustls"), "auth uses rustls");
    assert!(
        !deps.iter().any(|d| d == "aws-lc-rs" || d == "aws-lc-sys"),
        "aws-lc-rs crept in: some crate enabled rustls default features"
    );
}
