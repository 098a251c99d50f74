//! Nodes: OpenSSH hosts registered with the cluster, their address, host names and labels.

use crate::resource::envelope_serde;
use crate::role::validate_name;
use crate::{Metadata, ResourceKind, TypesError};
use serde::{Deserialize, Serialize};

/// An SSH node the proxy may route to: `metadata.name` is its id (a UUID when `tctl nodes add`
/// makes it), `spec.hostname` the name users type, `metadata.labels` what roles match.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Id and labels.
    pub metadata: Metadata,
    /// Address and hostname.
    pub spec: NodeSpec,
}
envelope_serde!(Node, NodeSpec, ResourceKind::Node);

/// Where a node's sshd listens and what it is called.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// `host:port` of the node's sshd.
    pub addr: String,
    /// The name users address the node by (`node-name` in `root@node-name.<cluster>`).
    pub hostname: String,
}

impl Node {
    /// The node's id.
    pub fn id(&self) -> &str {
        &self.metadata.name
    }

    /// Checks the id, hostname and address.
    pub fn validate(&self) -> Result<(), TypesError> {
        let invalid = |field: &str, message: String| TypesError::Invalid {
            kind: "node",
            name: self.metadata.name.clone(),
            field: field.into(),
            message,
        };
        validate_name(&self.metadata.name).map_err(|m| invalid("metadata.name", m))?;
        validate_name(&self.spec.hostname).map_err(|m| invalid("spec.hostname", m))?;
        let ok = self
            .spec
            .addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(invalid(
                "spec.addr",
                format!("{:?} is not host:port", self.spec.addr),
            ));
        }
        Ok(())
    }

    /// Labels as `k=v` sorted and joined with `,` (as `tsh ls` prints them).
    pub fn labels_text(&self) -> String {
        self.metadata
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}
