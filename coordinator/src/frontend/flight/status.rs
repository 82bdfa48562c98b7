//! Flight SQL errors: the same SQLSTATE table as pg wire, translated to gRPC
//! status codes. The SQLSTATE travels in the message and in the
//! `x-loch-sqlstate` metadata entry.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::LochError;

/// The gRPC code for a SQLSTATE. `Internal` only for `XX000`, Loch's bugs.
pub fn code_for(sqlstate: &str) -> Code {
    match sqlstate {
        "42501" => Code::PermissionDenied,
        // undefined table / schema / object, unknown ticket or statement
        "42P01" | "3F000" | "42704" | "34000" | "26000" => Code::NotFound,
        "57014" => Code::Cancelled,
        "0A000" => Code::Unimplemented,
        "25P02" => Code::FailedPrecondition,
        "58030" | "58000" => Code::Unavailable,
        "XX001" => Code::DataLoss,
        "XX000" => Code::Internal,
        s if s.starts_with("53") || s.starts_with("54") => Code::ResourceExhausted,
        s if s.starts_with("28") => Code::Unauthenticated,
        _ => Code::InvalidArgument,
    }
}

/// The status a client gets for `error`.
pub fn status(error: &LochError) -> Status {
    let sqlstate = error.sqlstate();
    if sqlstate == "XX000" {
        tracing::warn!(error = %error, "flight sql internal error");
    }
    sqlstate_status(sqlstate, &error.message())
}

/// The status for an error known by its SQLSTATE and message: a
/// [`LochError`]'s, or a login refused by the role's `CONNECTION LIMIT`
/// (53300, which pg wire answers at startup).
pub fn sqlstate_status(sqlstate: &'static str, message: &str) -> Status {
    let mut status = Status::new(
        code_for(sqlstate),
        format!("{message} (SQLSTATE {sqlstate})"),
    );
    status
        .metadata_mut()
        .insert("x-loch-sqlstate", MetadataValue::from_static(sqlstate));
    status
}

/// The status for a query error an executor hit serving a direct ticket:
/// the same SQLSTATE and code as from the coordinator.
pub fn datafusion_status(error: datafusion::error::DataFusionError) -> Status {
    status(&LochError::from(error))
}

/// A refused login or token.
pub fn unauthenticated(message: &str) -> Status {
    Status::unauthenticated(message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_sqlstate_class() {
        assert_eq!(code_for("42601"), Code::InvalidArgument);
        assert_eq!(code_for("42703"), Code::InvalidArgument);
        assert_eq!(code_for("42P01"), Code::NotFound);
        assert_eq!(code_for("42501"), Code::PermissionDenied);
        assert_eq!(code_for("57014"), Code::Cancelled);
        assert_eq!(code_for("53200"), Code::ResourceExhausted);
        assert_eq!(code_for("53300"), Code::ResourceExhausted);
        assert_eq!(code_for("53400"), Code::ResourceExhausted);
        assert_eq!(code_for("22012"), Code::InvalidArgument);
        assert_eq!(code_for("XX000"), Code::Internal);
        let s = status(&LochError::Canceled);
        assert_eq!(s.code(), Code::Cancelled);
        assert!(s.message().contains("SQLSTATE 57014"));
        assert_eq!(
            s.metadata()
                .get("x-loch-sqlstate")
                .and_then(|v| v.to_str().ok()),
            Some("57014")
        );
    }
}
