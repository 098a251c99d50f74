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
    for package in [
        "tctl-bots",
        "auth-server",
        "tbot",
        "tsh",
        "machine-id-bot",
        "machine-id-bench",
    ] {
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

/// The workspace's root directory.
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The `.rs` files below `dir`, as (path relative to `dir` with `/` separators, text), sorted.
fn rust_sources(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path
                    .strip_prefix(dir)
                    .expect("below dir")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                out.push((rel, text));
            }
        }
    }
    out.sort();
    out
}

/// Whether `line` names the generated wire code: the proto crate by any path (`use
/// machine_id_proto::...`, `machine_id_proto::v1::Certs`, `extern crate machine_id_proto`),
/// a `v1::` path (after `use machine_id_proto::v1` elsewhere, or an alias), or prost's
/// types. Comments count too: a doc that links a generated type depends on it.
fn names_wire_types(line: &str) -> Option<&'static str> {
    if line.contains("machine_id_proto") {
        return Some("machine_id_proto");
    }
    if line.contains("prost_types") || line.contains("prost::") {
        return Some("prost");
    }
    // `v1::` as a path segment of its own (not `foov1::`).
    let mut from = 0;
    while let Some(i) = line[from..].find("v1::") {
        let at = from + i;
        let before = line[..at].chars().next_back();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return Some("v1::");
        }
        from = at + 4;
    }
    None
}

/// The files of `crates/auth/src` allowed to name the generated wire types: the gRPC
/// service layer (`service.rs` and its submodules) and the proxy listener.
fn may_name_wire_types(rel: &str) -> bool {
    rel == "service.rs" || rel.starts_with("service/") || rel == "proxy.rs"
}

#[test]
fn only_the_auth_service_layer_and_proxy_name_wire_types() {
    let src = workspace_root().join("crates/auth/src");
    let files = rust_sources(&src);
    assert!(
        files.iter().any(|(f, _)| f == "core/mod.rs") && files.len() > 10,
        "expected the auth crate's sources under {}, found {:?}",
        src.display(),
        files.iter().map(|(f, _)| f).collect::<Vec<_>>()
    );
    let mut violations = Vec::new();
    let mut allowed_hits = 0;
    for (rel, text) in &files {
        for (n, line) in text.lines().enumerate() {
            let Some(what) = names_wire_types(line) else {
                continue;
            };
            if !may_name_wire_types(rel) {
                violations.push(format!(
                    "crates/auth/src/{rel}:{}: names {what}: {}",
                    n + 1,
                    line.trim()
                ));
            } else if line.trim_start().starts_with("pub") && line.contains(" use ") {
                // A re-export would hand the wire types to the rest of the crate.
                violations.push(format!(
                    "crates/auth/src/{rel}:{}: re-exports wire types: {}",
                    n + 1,
                    line.trim()
                ));
            } else {
                allowed_hits += 1;
            }
        }
    }
    assert!(
        violations.is_empty(),
        "only crates/auth/src/service.rs, crates/auth/src/service/ and crates/auth/src/proxy.rs may name the generated wire types (machine_id_proto, v1::, prost); the core takes and returns machine_id_types values and domain structs, and the service converts (see crates/auth/src/core/mod.rs):\n{}",
        violations.join("\n")
    );
    assert!(
        allowed_hits > 0,
        "the scan found no wire type even in the service layer: the patterns are stale"
    );
}

/// The base modules of the auth core, which every concern module may use; see
/// `crates/auth/src/core/mod.rs`.
const CORE_BASE: [&str; 4] = ["mod.rs", "access.rs", "audit.rs", "issue.rs"];

/// The names of the functions and methods `text` defines.
fn defined_fns(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace().peekable();
        while let Some(w) = words.next() {
            if w == "fn"
                && let Some(name) = words.peek()
            {
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        }
    }
    out
}

#[test]
fn auth_core_concerns_use_only_the_base() {
    let dir = workspace_root().join("crates/auth/src/core");
    let files = rust_sources(&dir);
    for base in CORE_BASE {
        assert!(
            files.iter().any(|(f, _)| f == base),
            "the core's base module {base} is missing; update CORE_BASE in this test and crates/auth/src/core/mod.rs"
        );
    }
    let concerns: Vec<(&str, Vec<String>)> = files
        .iter()
        .filter(|(f, _)| !CORE_BASE.contains(&f.as_str()))
        .map(|(f, text)| (f.as_str(), defined_fns(text)))
        .collect();
    assert!(
        concerns.len() >= 5,
        "expected the core's concern modules, found {concerns:?}"
    );
    let mut violations = Vec::new();
    for (user, text) in &files {
        for (concern, fns) in &concerns {
            if user == concern {
                continue;
            }
            let module = concern.trim_end_matches(".rs");
            // A path into the concern (mod.rs declares it and re-exports its domain structs
            // by their bare module name, which is no use of its rules).
            let mut needles: Vec<String> = vec![
                format!("super::{module}"),
                format!("core::{module}"),
                format!("self::{module}::"),
            ];
            for f in fns {
                needles.push(format!("self.{f}("));
                needles.push(format!("Self::{f}("));
            }
            for (n, line) in text.lines().enumerate() {
                if let Some(needle) = needles.iter().find(|x| line.contains(x.as_str())) {
                    violations.push(format!(
                        "crates/auth/src/core/{user}:{}: uses {needle} of {concern}: {}",
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "a module of the auth core uses a concern module's items; concerns use only the base ({}), and a rule two concerns need moves into the base:\n{}",
        CORE_BASE.join(", "),
        violations.join("\n")
    );
}
