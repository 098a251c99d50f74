//! Roles: the text table, the YAML round trip, `-f`, and malformed files.

use crate::{rows_starting, table};
use machine_id_e2e::AuthServer;

#[test]
fn roles_table_matches_the_guide() {
    let auth = AuthServer::start();
    let out = auth.tctl(&["get", "roles", "--format=text"]).success();
    let t = table(&out);
    assert_eq!(
        t[0],
        [
            "Role",
            "Allowed to login as",
            "Node Labels",
            "Access to resources"
        ],
        "{out}"
    );
    // The header is underlined with dashes as wide as each column.
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[1].chars().all(|c| c == '-' || c == ' '), "{out}");
    let access = rows_starting(&t, "access");
    assert_eq!(access.len(), 1, "{out}");
    assert_eq!(access[0][1], "{{internal.logins}}");
    assert_eq!(access[0][2], "<all nodes>");
    assert!(access[0][3].starts_with("event:list,read"), "{out}");
    for r in ["editor", "auditor"] {
        assert_eq!(rows_starting(&t, r).len(), 1, "{out}");
    }
    // Text is the default for a list.
    assert_eq!(auth.tctl(&["get", "roles"]).success(), out);
}

#[test]
fn yaml_round_trip_needs_force_and_changes_nothing() {
    let auth = AuthServer::start();
    let yaml = auth.tctl(&["get", "roles/access"]).success();
    assert!(yaml.starts_with("kind: role\n"), "{yaml}");
    let f = auth.scratch().join("access.yaml");
    std::fs::write(&f, &yaml).unwrap();
    let f = f.to_str().unwrap();

    let err = auth.tctl(&["create", f]).failure();
    assert!(err.contains("role \"access\" already exists"), "{err}");
    assert!(err.contains("-f"), "{err}");

    let out = auth.tctl(&["create", "-f", f]).success();
    assert_eq!(out, "role \"access\" has been updated\n");
    assert_eq!(auth.tctl(&["get", "roles/access"]).success(), yaml);
    let out = auth.tctl(&["create", "--force", f]).success();
    assert!(out.contains("has been updated"), "{out}");
    assert_eq!(
        auth.tctl(&["get", "roles/access", "--format=yaml"])
            .success(),
        yaml
    );
}

#[test]
fn editing_logins_round_trips() {
    let auth = AuthServer::start();
    let yaml = auth.tctl(&["get", "roles/access"]).success();
    let mut doc: serde_norway::Value = serde_norway::from_str(&yaml).unwrap();
    doc["spec"]["allow"]["logins"]
        .as_sequence_mut()
        .unwrap()
        .push("root".into());
    let f = auth.scratch().join("access.yaml");
    std::fs::write(&f, serde_norway::to_string(&doc).unwrap()).unwrap();
    auth.tctl(&["create", "-f", f.to_str().unwrap()]).success();

    let back: serde_norway::Value =
        serde_norway::from_str(&auth.tctl(&["get", "roles/access"]).success()).unwrap();
    assert_eq!(back, doc);
    let t = table(&auth.tctl(&["get", "roles"]).success());
    assert_eq!(
        rows_starting(&t, "access")[0][1],
        "{{internal.logins}},root"
    );
}

#[test]
fn new_roles_are_created_several_per_file() {
    let auth = AuthServer::start();
    let f = auth.scratch().join("roles.yaml");
    std::fs::write(
        &f,
        "kind: role\nversion: v5\nmetadata: {name: dev}\nspec:\n  allow:\n    logins: [dev]\n    node_labels: {env: dev}\n---\nkind: role\nversion: v5\nmetadata: {name: ops}\nspec:\n  allow:\n    logins: [root, ops]\n",
    )
    .unwrap();
    let out = auth.tctl(&["create", f.to_str().unwrap()]).success();
    assert_eq!(
        out,
        "role \"dev\" has been created\nrole \"ops\" has been created\n"
    );
    let t = table(&auth.tctl(&["get", "roles"]).success());
    assert_eq!(rows_starting(&t, "dev")[0][1..3], ["dev", "env=dev"]);
    assert_eq!(rows_starting(&t, "ops")[0][1], "root,ops");

    // Several as yaml: `---`-separated documents that parse back.
    let all = auth.tctl(&["get", "roles", "--format=yaml"]).success();
    assert!(all.contains("---\n"), "{all}");
    assert_eq!(
        machine_id_types::parse_resources(&all, "all")
            .unwrap()
            .len(),
        5
    );
    let json: serde_json::Value =
        serde_json::from_str(&auth.tctl(&["get", "roles", "--format=json"]).success()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 5);

    let out = auth.tctl(&["rm", "roles/dev"]).success();
    assert!(out.contains("\"dev\" has been deleted"), "{out}");
    let err = auth.tctl(&["get", "roles/dev"]).failure();
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn malformed_yaml_names_file_document_field_and_creates_nothing() {
    let auth = AuthServer::start();
    let f = auth.scratch().join("bad.yaml");
    std::fs::write(
        &f,
        "kind: role\nversion: v5\nmetadata: {name: good}\nspec: {}\n---\nkind: role\nversion: v5\nmetadata: {name: bad}\nspec:\n  allow:\n    loginz: [root]\n",
    )
    .unwrap();
    let err = auth.tctl(&["create", f.to_str().unwrap()]).failure();
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains("document 2"), "{err}");
    assert!(err.contains("spec.allow.loginz"), "{err}");
    // The good first document was not written either.
    let err = auth.tctl(&["get", "roles/good"]).failure();
    assert!(err.contains("not found"), "{err}");

    std::fs::write(
        &f,
        "kind: cluster\nversion: v2\nmetadata: {name: x}\nspec: {}\n",
    )
    .unwrap();
    let err = auth.tctl(&["create", f.to_str().unwrap()]).failure();
    assert!(err.contains("document 1") && err.contains("kind"), "{err}");
    assert!(err.contains("cluster"), "{err}");

    let err = auth.tctl(&["create", "/nonexistent/file.yaml"]).failure();
    assert!(err.contains("/nonexistent/file.yaml"), "{err}");
}

#[test]
fn unknown_kind_in_get_says_what_is_expected() {
    let auth = AuthServer::start();
    let err = auth.tctl(&["get", "clusters"]).failure();
    assert!(err.contains("roles"), "{err}");
}
