//! Definition errors with their location.

use std::fmt;

use thiserror::Error;

use crate::yaml::Loc;

/// One problem in a definition file: where it is and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct SpecError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl SpecError {
    pub fn at(file: &str, loc: Loc, message: impl Into<String>) -> Self {
        Self { file: file.to_string(), line: loc.line, column: loc.column, message: message.into() }
    }
}

/// Every problem found in a definition, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl From<SpecError> for SpecErrors {
    fn from(e: SpecError) -> Self {
        SpecErrors(vec![e])
    }
}
