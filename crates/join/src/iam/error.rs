//! Why an IAM join was refused or could not be attempted.

use thiserror::Error;

/// Why an IAM join failed. Every refusal names its cause; messages say what to do.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IamError {
    /// Placeholder while the module is being written.
    #[error("not implemented yet: {0}")]
    Unimplemented(&'static str),
}
