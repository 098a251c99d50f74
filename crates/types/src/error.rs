//! The one error type of the domain crate: invalid fields and unparsable resources, naming what
//! and where.

use thiserror::Error;

/// Errors of the domain types: a value that is not what it must be.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TypesError {
    /// A duration string that does not parse.
    #[error("invalid duration {input:?}: {reason}; write it like 30m, 1h or 1h30m")]
    InvalidDuration {
        /// What was given.
        input: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A resource that fails validation.
    #[error("invalid {kind} {name:?}: field {field}: {message}")]
    Invalid {
        /// The resource kind.
        kind: &'static str,
        /// The resource name.
        name: String,
        /// The field at fault, as a dotted path.
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A resource file that does not parse.
    #[error(transparent)]
    Resource(#[from] ResourceError),
}

/// A resource document that cannot be read: names the file, the document, the field and what
/// is expected.
#[derive(Debug, Error)]
#[error("{source_name}: document {document}: {field}: {message}")]
pub struct ResourceError {
    /// The file (or other source) the document came from.
    pub source_name: String,
    /// The 1-based index of the document in a multi-document file.
    pub document: usize,
    /// The field at fault, as a dotted path (`.` when the document as a whole is wrong).
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}
