//! Why a trace cannot be read. Every error names the byte offset in the file
//! where the reader found the problem; a bad file is always an error, never a
//! panic.

use std::io;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TraceError {
    /// The file does not start with the trace magic.
    #[error("byte {offset}: not an mtesim trace (bad magic number)")]
    BadMagic { offset: u64 },
    /// A trace of another format version.
    #[error(
        "byte {offset}: trace format version {found}; this mtesim reads version {supported} \
         (record the program again, or use the mtesim that wrote it)"
    )]
    UnsupportedVersion {
        offset: u64,
        found: u16,
        supported: u16,
    },
    /// The file ends before the part named by `what` is complete.
    #[error("byte {offset}: truncated trace: the file ends inside {what}")]
    Truncated { offset: u64, what: &'static str },
    /// The bytes at `offset` are not what the format allows.
    #[error("byte {offset}: corrupt trace: {reason}")]
    Corrupt { offset: u64, reason: String },
    /// Reading the file failed.
    #[error("byte {offset}: cannot read the trace: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
}

impl TraceError {
    /// The byte offset of the problem.
    pub fn offset(&self) -> u64 {
        match self {
            TraceError::BadMagic { offset }
            | TraceError::UnsupportedVersion { offset, .. }
            | TraceError::Truncated { offset, .. }
            | TraceError::Corrupt { offset, .. }
            | TraceError::Io { offset, .. } => *offset,
        }
    }

    pub(crate) fn corrupt(offset: u64, reason: impl Into<String>) -> Self {
        TraceError::Corrupt {
            offset,
            reason: reason.into(),
        }
    }
}
