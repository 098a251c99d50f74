//! The resource envelope (`kind`, `version`, `metadata`, `spec`) and its YAML/JSON
//! (de)serialization.

use crate::{Lock, Node, ProvisionToken, ResourceError, Role, User};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The metadata every resource carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The resource's unique name within its kind.
    pub name: String,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Labels, `key: value`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// When the resource stops being valid, if ever (RFC 3339).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires: Option<OffsetDateTime>,
}

impl Metadata {
    /// Metadata with just a name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Whether the resource has expired at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// The kinds of resources `tctl` manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// A role.
    Role,
    /// A join token.
    Token,
    /// A user (bots have one each).
    User,
    /// An SSH node.
    Node,
    /// A lock.
    Lock,
}

impl ResourceKind {
    /// The kind as YAML writes it (`role`, `token`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Role => "role",
            Self::Token => "token",
            Self::User => "user",
            Self::Node => "node",
            Self::Lock => "lock",
        }
    }

    /// The resource version this project writes.
    pub fn version(self) -> &'static str {
        match self {
            Self::Role => "v5",
            _ => "v2",
        }
    }

    /// Parses `role`, `roles`, `token`, `tokens`, ...
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim_end_matches('s') {
            "role" => Self::Role,
            "token" => Self::Token,
            "user" => Self::User,
            "node" => Self::Node,
            "lock" => Self::Lock,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Any one resource document.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// `kind: role`
    Role(Role),
    /// `kind: token`
    Token(ProvisionToken),
    /// `kind: user`
    User(User),
    /// `kind: node`
    Node(Node),
    /// `kind: lock`
    Lock(Lock),
}

/// The on-disk shape shared by every resource.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Envelope<T> {
    pub kind: String,
    pub version: String,
    pub metadata: Metadata,
    pub spec: T,
}

/// Implements serde for a resource through the envelope shape.
macro_rules! envelope_serde {
    ($ty:ident, $spec:ty, $kind:expr) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                crate::resource::Envelope {
                    kind: $kind.as_str().to_string(),
                    version: $kind.version().to_string(),
                    metadata: self.metadata.clone(),
                    spec: self.spec.clone(),
                }
                .serialize(s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let e: crate::resource::Envelope<$spec> =
                    crate::resource::Envelope::deserialize(d)?;
                if e.kind != $kind.as_str() {
                    return Err(serde::de::Error::custom(format!(
                        "kind is {:?}, expected {:?}",
                        e.kind,
                        $kind.as_str()
                    )));
                }
                Ok($ty {
                    metadata: e.metadata,
                    spec: e.spec,
                })
            }
        }
    };
}
pub(crate) use envelope_serde;

impl Resource {
    /// The resource's kind.
    pub fn kind(&self) -> ResourceKind {
        match self {
            Self::Role(_) => ResourceKind::Role,
            Self::Token(_) => ResourceKind::Token,
            Self::User(_) => ResourceKind::User,
            Self::Node(_) => ResourceKind::Node,
            Self::Lock(_) => ResourceKind::Lock,
        }
    }

    /// The resource's metadata.
    pub fn metadata(&self) -> &Metadata {
        match self {
            Self::Role(r) => &r.metadata,
            Self::Token(r) => &r.metadata,
            Self::User(r) => &r.metadata,
            Self::Node(r) => &r.metadata,
            Self::Lock(r) => &r.metadata,
        }
    }

    /// The resource's name.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// Checks the resource's own rules (names, required fields).
    pub fn validate(&self) -> Result<(), crate::TypesError> {
        match self {
            Self::Role(r) => r.validate(),
            Self::Token(r) => r.validate(),
            Self::User(r) => r.validate(),
            Self::Node(r) => r.validate(),
            Self::Lock(r) => r.validate(),
        }
    }

    /// The resource as one YAML document (without the `---` separator).
    pub fn to_yaml(&self) -> String {
        let out = match self {
            Self::Role(r) => serde_norway::to_string(r),
            Self::Token(r) => serde_norway::to_string(r),
            Self::User(r) => serde_norway::to_string(r),
            Self::Node(r) => serde_norway::to_string(r),
            Self::Lock(r) => serde_norway::to_string(r),
        };
        // Serializing plain data structures to YAML cannot fail.
        out.unwrap_or_default()
    }

    /// The resource as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        let out = match self {
            Self::Role(r) => serde_json::to_value(r),
            Self::Token(r) => serde_json::to_value(r),
            Self::User(r) => serde_json::to_value(r),
            Self::Node(r) => serde_json::to_value(r),
            Self::Lock(r) => serde_json::to_value(r),
        };
        out.unwrap_or_default()
    }
}

/// Reads every resource in a YAML (or JSON) text of one or more `---`-separated documents.
///
/// `source` names the text in errors (usually the file name). Each document must have a known
/// `kind`; unknown fields are errors; every resource is validated. Nothing is returned unless
/// every document is good, so a caller that writes them writes all or nothing.
pub fn parse_resources(text: &str, source: &str) -> Result<Vec<Resource>, ResourceError> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let err = |field: &str, message: String| ResourceError {
            source_name: source.to_string(),
            document,
            field: field.to_string(),
            message,
        };
        let value = serde_norway::Value::deserialize(doc).map_err(|e| err(".", e.to_string()))?;
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).ok_or_else(|| {
            err(
                "kind",
                "missing; expected one of role, token, user, node, lock".into(),
            )
        })?;
        let kind = ResourceKind::parse(kind)
            .filter(|k| k.as_str() == kind)
            .ok_or_else(|| {
                err(
                    "kind",
                    format!("unknown kind {kind:?}; expected one of role, token, user, node, lock"),
                )
            })?;
        fn typed<T: serde::de::DeserializeOwned>(
            v: serde_norway::Value,
        ) -> Result<T, (String, String)> {
            serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                (path, e.into_inner().to_string())
            })
        }
        let res = match kind {
            ResourceKind::Role => typed(value).map(Resource::Role),
            ResourceKind::Token => typed(value).map(Resource::Token),
            ResourceKind::User => typed(value).map(Resource::User),
            ResourceKind::Node => typed(value).map(Resource::Node),
            ResourceKind::Lock => typed(value).map(Resource::Lock),
        }
        .map_err(|(path, msg)| err(&path, msg))?;
        res.validate().map_err(|e| match e {
            crate::TypesError::Invalid { field, message, .. } => err(&field, message),
            other => err(".", other.to_string()),
        })?;
        out.push(res);
    }
    if out.is_empty() {
        return Err(ResourceError {
            source_name: source.to_string(),
            document: 1,
            field: ".".into(),
            message:
                "no resources found; expected a YAML document with kind, version, metadata and spec"
                    .into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_document_and_field() {
        let text = "kind: role\nversion: v5\nmetadata: {name: a}\nspec: {}\n---\nkind: role\nversion: v5\nmetadata: {name: b}\nspec:\n  allow:\n    logins: [root]\n    nodez: {}\n";
        let e = parse_resources(text, "f.yaml").unwrap_err();
        assert_eq!(e.document, 2);
        assert_eq!(e.field, "spec.allow.nodez");
        assert!(e.message.contains("nodez"), "{e}");
        assert!(e.to_string().starts_with("f.yaml: document 2:"), "{e}");
    }

    #[test]
    fn unknown_kind_is_named() {
        let e = parse_resources(
            "kind: cluster\nversion: v2\nmetadata: {name: a}\nspec: {}\n",
            "x",
        )
        .unwrap_err();
        assert_eq!(e.field, "kind");
        assert!(e.message.contains("cluster"));
    }

    #[test]
    fn empty_text_is_an_error() {
        assert!(parse_resources("", "x").is_err());
        assert!(parse_resources("---\n", "x").is_err());
    }
}
