//! The coordinator's error type and the one table that maps every error a
//! client can see to a PostgreSQL SQLSTATE.
//!
//! Both protocols use [`LochError::sqlstate`]: pg wire sends it as the
//! error code, Flight SQL maps the same code to a gRPC status
//! (`frontend::flight::code_for`). `XX000` (internal_error) is reserved
//! for real bugs: anything a client can provoke with bad input gets a
//! specific class.
//!
//! Errors Loch makes carry their code in their type: a [`LochError`]
//! variant, also when it crosses a DataFusion stream or a UDF (wrapped as
//! `DataFusionError::External` and found again by downcasting), and
//! [`executor_lost`] knows a lost executor by its type, for the 58000
//! class and for the decision to plan a query again alike. What is still
//! read from text is what arrives only as text: DataFusion's own planning
//! and execution errors (`Plan`/`Execution` carry a message and nothing
//! else), two delta-rs errors whose types are private, and an executor's
//! error relayed by another executor through datafusion-distributed.

use arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::TokenizerError;
use loch_executor::cluster::ExecutorUnreachable;

/// Errors a session can return to a client.
#[derive(Debug, thiserror::Error)]
pub enum LochError {
    /// Planning or execution failed inside DataFusion; classified by
    /// [`classify_datafusion`].
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    /// The statement text does not parse.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// Valid SQL that Loch does not support (yet).
    #[error("not supported: {0}")]
    NotSupported(String),
    /// A setting was given a value it cannot take.
    #[error("invalid value for parameter \"{name}\": {value}")]
    InvalidParameterValue { name: String, value: String },
    /// A setting that does not exist.
    #[error("unrecognized configuration parameter \"{0}\"")]
    UnknownParameter(String),
    /// A bound parameter could not be used.
    #[error("{0}")]
    InvalidParameter(String),
    /// The client cancelled the running statement.
    #[error("canceling statement due to user request")]
    Canceled,
    /// The statement ran past `statement_timeout`.
    #[error("canceling statement due to statement timeout")]
    StatementTimeout,
    /// A statement other than ROLLBACK inside a failed transaction block.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,
    /// A Flight SQL ticket this session does not hold (forged, used, from
    /// another session, or expired).
    #[error("unknown ticket: it was already used, has expired, or belongs to another session")]
    UnknownTicket,
    /// A prepared statement handle this session does not hold.
    #[error("prepared statement does not exist")]
    UnknownPreparedStatement,
    /// A per-session limit was reached.
    #[error("{0}")]
    TooMany(String),
    /// The admission queue is full.
    #[error("{0}")]
    QueueFull(String),
    /// The catalog refused or failed a change (DDL) or could not read a
    /// table's metadata.
    #[error("{0}")]
    Catalog(#[from] loch_catalog::CatalogError),
    /// The user lacks a privilege: `object` names what was refused.
    #[error("permission denied for {0}")]
    PermissionDenied(String),
    /// A role that does not exist.
    #[error("role \"{0}\" does not exist")]
    UnknownRole(String),
    /// `CREATE ROLE` of a role that exists.
    #[error("role \"{0}\" already exists")]
    RoleExists(String),
    /// The session's user was dropped or lost `LOGIN` since it connected.
    #[error("role \"{0}\" no longer exists or may no longer log in: reconnect")]
    SessionRoleGone(String),
    /// A grant that cannot be made (wrong privilege for the object, a cycle
    /// of role memberships).
    #[error("{0}")]
    InvalidGrant(String),
    /// A name Loch keeps for itself.
    #[error("{0}")]
    ReservedName(String),
    /// The object is in use (the current user cannot be dropped).
    #[error("{0}")]
    ObjectInUse(String),
    /// An expression of the wrong type where a type is required (a row
    /// filter that is not boolean, a mask of another type than its column).
    #[error("{0}")]
    DatatypeMismatch(String),
    /// The statement does not apply to this kind of object (a view where a
    /// table is needed).
    #[error("{0}")]
    WrongObjectType(String),
    /// A column that does not exist.
    #[error("{0}")]
    UndefinedColumn(String),
    /// An object that does not exist (a row filter or mask to drop).
    #[error("{0}")]
    UndefinedObject(String),
    /// A transaction-block statement (`SAVEPOINT`, `DECLARE` without
    /// `HOLD`) outside a block.
    #[error("{0}")]
    NoActiveTransaction(String),
    /// `RELEASE`/`ROLLBACK TO` a savepoint that does not exist.
    #[error("{0}")]
    InvalidSavepoint(String),
    /// `FETCH`/`CLOSE` of a cursor that does not exist.
    #[error("{0}")]
    UnknownCursor(String),
    /// `DECLARE` of a cursor name already open.
    #[error("{0}")]
    CursorExists(String),
    /// `DECLARE … CURSOR FOR` a statement that returns no rows.
    #[error("{0}")]
    InvalidCursorDefinition(String),
    /// A real bug: a state Loch should never reach.
    #[error("internal error: {0}")]
    Internal(String),
}

impl LochError {
    /// The PostgreSQL SQLSTATE for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            LochError::DataFusion(e) => classify_datafusion(e),
            LochError::Syntax(_) => "42601",
            LochError::NotSupported(_) => "0A000",
            LochError::InvalidParameterValue { .. } => "22023",
            LochError::UnknownParameter(_) => "42704",
            LochError::InvalidParameter(_) => "22023",
            LochError::Canceled | LochError::StatementTimeout => "57014",
            LochError::InFailedTransaction => "25P02",
            LochError::UnknownTicket => "34000",
            LochError::UnknownPreparedStatement => "26000",
            LochError::TooMany(_) => "53400",
            LochError::QueueFull(_) => "53000",
            LochError::Catalog(e) => classify_catalog(e),
            LochError::PermissionDenied(_) => "42501",
            LochError::UnknownRole(_) => "42704",
            LochError::RoleExists(_) => "42710",
            LochError::SessionRoleGone(_) => "28000",
            LochError::InvalidGrant(_) => "0LP01",
            LochError::ReservedName(_) => "42939",
            LochError::ObjectInUse(_) => "55006",
            LochError::DatatypeMismatch(_) => "42804",
            LochError::WrongObjectType(_) => "42809",
            LochError::UndefinedColumn(_) => "42703",
            LochError::UndefinedObject(_) => "42704",
            LochError::NoActiveTransaction(_) => "25P01",
            LochError::InvalidSavepoint(_) => "3B001",
            LochError::UnknownCursor(_) => "34000",
            LochError::CursorExists(_) => "42P03",
            LochError::InvalidCursorDefinition(_) => "42P11",
            LochError::Internal(_) => "XX000",
        }
    }

    /// The client-facing message (without DataFusion's nested prefixes,
    /// and without the stack traces some libraries put in their errors
    /// when `RUST_BACKTRACE` is set).
    pub fn message(&self) -> String {
        let message = match self {
            LochError::DataFusion(e) => datafusion_message(e),
            LochError::Catalog(loch_catalog::CatalogError::DataFusion(e)) => datafusion_message(e),
            other => other.to_string(),
        };
        without_backtrace(message)
    }
}

/// The SQLSTATE of a catalog error.
pub fn classify_catalog(e: &loch_catalog::CatalogError) -> &'static str {
    use loch_catalog::CatalogError as C;
    match e {
        C::SchemaNotFound(_) => "3F000",
        C::SchemaExists(_) => "42P06",
        C::SchemaNotEmpty { .. } | C::RoleInUse { .. } | C::CredentialInUse { .. } => "2BP01",
        C::CredentialNotFound(_) => "42704",
        C::UnknownColumn(_) => "42703",
        C::CredentialExists(_) => "42710",
        C::RelationExists { .. } => "42P07",
        C::RelationNotFound { .. } => "42P01",
        C::WrongKind { .. } | C::PastVersion(_) => "42809",
        C::Invalid(_) => "42601",
        C::ReadOnly(_) => "42501",
        C::DataFusion(df) => classify_datafusion(df),
        C::Delta(delta) => classify_delta(delta),
        C::DeltaAt { source, .. } => classify_delta(source),
        C::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => "58P01",
        C::Io { .. } => "58030",
        C::Parquet(_) => "XX001",
        C::Arrow(_) => "22000",
        C::Store(_) | C::Sample(_) => "58030",
    }
}

/// The SQLSTATE of a delta-rs error: conflicts are serialization failures,
/// unreadable logs are data corruption, storage trouble is I/O.
fn classify_delta(e: &loch_catalog::deltalake::DeltaTableError) -> &'static str {
    use loch_catalog::deltalake::DeltaTableError as D;
    match e {
        D::Transaction { .. } | D::VersionAlreadyExists(_) => "40001",
        D::NotATable(_)
        | D::InvalidTableLocation(_)
        | D::NotInitialized
        | D::NotInitializedWithFiles(_) => "42P01",
        D::InvalidVersion(_) | D::InvalidDateTimeString { .. } => "22023",
        D::MissingFeature { .. } | D::UnsupportedColumnMapping { .. } => "0A000",
        D::ObjectStore { .. } | D::Io { .. } => "58030",
        D::InvalidJsonLog { .. } | D::InvalidStatsJson { .. } | D::Parquet { .. } => "XX001",
        D::Arrow { .. } => "22000",
        D::SchemaMismatch { .. } => "42804",
        // A MERGE whose source matches one target row twice: PostgreSQL's
        // "MERGE command cannot affect row a second time".
        D::Generic(message) if message.contains("multiple source rows") => "21000",
        // `VACUUM … RETAIN` shorter than the table's retention.
        // (delta-rs' error type for it is private: known by its message.)
        D::GenericError { source }
            if source.to_string().starts_with("Invalid retention period") =>
        {
            "22023"
        }
        // The kernel's storage errors (it keeps object_store's error as a
        // plain field, so no source chain reaches it): an unreachable or
        // refusing store is I/O trouble, not corrupt data.
        D::KernelError(kernel) if kernel.to_string().contains("interacting with object store") => {
            "58030"
        }
        _ => "XX001",
    }
}

impl From<TokenizerError> for LochError {
    fn from(e: TokenizerError) -> Self {
        LochError::Syntax(e.to_string())
    }
}

impl From<ParserError> for LochError {
    fn from(e: ParserError) -> Self {
        LochError::Syntax(parser_message(&e))
    }
}

fn parser_message(e: &ParserError) -> String {
    match e {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m.clone(),
        ParserError::RecursionLimitExceeded => "statement nests too deeply".to_string(),
    }
}

/// The SQLSTATE of a DataFusion error, looking through contexts, shared and
/// external wrappers to the root cause.
pub fn classify_datafusion(e: &DataFusionError) -> &'static str {
    if executor_lost(e) {
        return EXECUTOR_LOST;
    }
    match e {
        DataFusionError::SQL(..) => "42601",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::Plan(msg) => classify_plan_message(msg),
        DataFusionError::SchemaError(schema_error, _) => {
            use datafusion::common::SchemaError;
            match schema_error.as_ref() {
                SchemaError::FieldNotFound { .. } => "42703",
                SchemaError::AmbiguousReference { .. } => "42702",
                SchemaError::DuplicateQualifiedField { .. }
                | SchemaError::DuplicateUnqualifiedField { .. } => "42701",
            }
        }
        DataFusionError::ArrowError(arrow, _) => classify_arrow(arrow),
        DataFusionError::Execution(msg) => classify_execution_message(msg),
        DataFusionError::Configuration(_) => "22023",
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => "58030",
        // A file gone between planning and scan is I/O, not corruption.
        DataFusionError::ParquetError(p) if is_missing_file(p) => "58030",
        DataFusionError::ParquetError(_) => "XX001",
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            classify_datafusion(inner)
        }
        DataFusionError::Shared(inner) => classify_datafusion(inner),
        DataFusionError::Collection(errors) => {
            errors.first().map(classify_datafusion).unwrap_or("XX000")
        }
        DataFusionError::External(inner) => {
            if let Some(loch) = inner.downcast_ref::<LochError>() {
                loch.sqlstate()
            } else if let Some(catalog) = inner.downcast_ref::<loch_catalog::CatalogError>() {
                classify_catalog(catalog)
            } else if let Some(delta) =
                inner.downcast_ref::<loch_catalog::deltalake::DeltaTableError>()
            {
                classify_delta(delta)
            } else if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                classify_datafusion(df)
            } else if let Some(arrow) = inner.downcast_ref::<ArrowError>() {
                classify_arrow(arrow)
            } else if inner.downcast_ref::<std::io::Error>().is_some() {
                "58030"
            } else {
                "XX000"
            }
        }
        DataFusionError::ExecutionJoin(_)
        | DataFusionError::Internal(_)
        | DataFusionError::Substrait(_)
        | DataFusionError::Ffi(_) => "XX000",
    }
}

fn classify_plan_message(msg: &str) -> &'static str {
    let lower = msg.to_ascii_lowercase();
    if lower.contains("not found") && (lower.contains("table") || lower.contains("view")) {
        "42P01"
    } else if lower.contains("group by") && lower.contains("aggregate") {
        "42803"
    } else if lower.contains("schema") && lower.contains("not found") {
        "3F000"
    } else if lower.contains("invalid function")
        || lower.contains("function") && lower.contains("not found")
        || lower.contains("no function matches")
    {
        "42883"
    } else if lower.contains("cannot infer common")
        || lower.contains("cannot coerce")
        || lower.contains("does not support")
        || lower.contains("coercion")
        || lower.contains("type")
    {
        "42804"
    } else if lower.contains("placeholder") || lower.contains("parameter") {
        "08P01"
    } else {
        "42000"
    }
}

fn classify_execution_message(msg: &str) -> &'static str {
    let lower = msg.to_ascii_lowercase();
    if lower.contains("divide by zero") || lower.contains("division by zero") {
        "22012"
    } else if lower.contains("cast") || lower.contains("parse") {
        "22P02"
    } else if lower.contains("overflow") {
        "22003"
    } else {
        "22000"
    }
}

fn classify_arrow(e: &ArrowError) -> &'static str {
    match e {
        ArrowError::DivideByZero => "22012",
        ArrowError::CastError(_) | ArrowError::ParseError(_) => "22P02",
        ArrowError::ArithmeticOverflow(_) => "22003",
        ArrowError::InvalidArgumentError(_) => "22023",
        ArrowError::ComputeError(msg) => classify_execution_message(msg),
        ArrowError::MemoryError(_) => "53200",
        ArrowError::IoError(..) => "58030",
        ArrowError::ParquetError(_) => "XX001",
        ArrowError::ExternalError(inner) => {
            if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                classify_datafusion(df)
            } else {
                "XX000"
            }
        }
        _ => "XX000",
    }
}

/// A DataFusion error's message, without the wrapper prefixes DataFusion adds
/// ("Error during planning: ", "External error: ", …) that mean nothing to a
/// SQL user.
/// True for a Parquet read that failed because its file is gone.
fn is_missing_file(e: &datafusion::parquet::errors::ParquetError) -> bool {
    use datafusion::parquet::errors::ParquetError;
    match e {
        ParquetError::External(inner) => inner
            .downcast_ref::<datafusion::object_store::Error>()
            .is_some_and(|o| matches!(o, datafusion::object_store::Error::NotFound { .. })),
        _ => false,
    }
}

/// `message` cut where a captured backtrace starts (delta-kernel appends
/// one to its errors' text: `\n   0: buoyant_kernel::…`).
fn without_backtrace(message: String) -> String {
    let cut = message.lines().position(|line| {
        let line = line.trim_start();
        line.starts_with("stack backtrace:")
            || line
                .split_once(": ")
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                && line.contains("::")
    });
    match cut {
        Some(n) => message
            .lines()
            .take(n)
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end()
            .to_string(),
        None => message,
    }
}

fn datafusion_message(e: &DataFusionError) -> String {
    match e {
        DataFusionError::SQL(p, _) => parser_message(p),
        DataFusionError::Plan(m)
        | DataFusionError::Execution(m)
        | DataFusionError::NotImplemented(m)
        | DataFusionError::ResourcesExhausted(m)
        | DataFusionError::Configuration(m) => m.clone(),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_message(inner)
        }
        DataFusionError::Shared(inner) => datafusion_message(inner),
        DataFusionError::ArrowError(a, _) => a.to_string(),
        DataFusionError::External(inner) => {
            if let Some(loch) = inner.downcast_ref::<LochError>() {
                loch.message()
            } else if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                datafusion_message(df)
            } else if is_executor_failure(inner.as_ref()) {
                let detail = match inner.downcast_ref::<tonic::Status>() {
                    Some(status) => status.message().to_string(),
                    None => inner.to_string(),
                };
                format!(
                    "executor lost while running the query ({detail}); \
                     the next query runs on the remaining executors"
                )
            } else {
                inner.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// The SQLSTATE of a query that lost an executor (`system_error`).
const EXECUTOR_LOST: &str = "58000";

/// Whether `e` is (or wraps) the failure of a call to an executor rather
/// than an error the query itself raised: the one answer to "did this
/// query lose an executor?", which both its SQLSTATE (58000) and the
/// decision to plan it again read.
pub fn executor_lost(e: &DataFusionError) -> bool {
    match e {
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            executor_lost(inner)
        }
        DataFusionError::Shared(inner) => executor_lost(inner),
        DataFusionError::Collection(errors) => errors.first().is_some_and(executor_lost),
        DataFusionError::External(inner) => external_lost(inner.as_ref()),
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            ArrowError::ExternalError(inner) => external_lost(inner.as_ref()),
            ArrowError::ComputeError(message) => {
                is_worker_connect_message(&message.to_ascii_lowercase())
            }
            _ => false,
        },
        DataFusionError::Execution(message) => {
            is_worker_connect_message(&message.to_ascii_lowercase())
        }
        _ => false,
    }
}

/// [`executor_lost`] of an error wrapped as external.
fn external_lost(inner: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    match inner.downcast_ref::<DataFusionError>() {
        Some(df) => executor_lost(df),
        None => match inner.downcast_ref::<LochError>() {
            Some(LochError::DataFusion(df)) => executor_lost(df),
            Some(_) => false,
            None => is_executor_failure(inner),
        },
    }
}

/// A call to an executor that failed as a call (connection reset, executor
/// gone, never reachable), not with a DataFusion error the executor sent
/// back: known by type ([`ExecutorUnreachable`] from Loch's channels,
/// tonic's status, Flight's error). The one exception: when one executor's
/// call to another fails, datafusion-distributed carries the error to the
/// coordinator as text only (its generic error type is private): a gRPC
/// status written out, which starts with `code: '`, or an
/// `ExecutorUnreachable` written out.
fn is_executor_failure(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    if e.downcast_ref::<ExecutorUnreachable>().is_some()
        || e.downcast_ref::<tonic::Status>().is_some()
        || e.downcast_ref::<arrow_flight::error::FlightError>()
            .is_some()
    {
        return true;
    }
    let text = e.to_string();
    text.starts_with("code: '")
        || text.starts_with("executor ") && text.contains(" cannot be reached: ")
        || is_worker_connect_message(&text.to_ascii_lowercase())
}

/// datafusion-distributed's own message when it cannot connect to a
/// worker, relayed from another executor (it has no error type of its own).
fn is_worker_connect_message(lower: &str) -> bool {
    lower.contains("distributed datafusion worker")
        || lower.contains("distributed datafusion channel")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error known only by its text, as datafusion-distributed relays
    /// an executor's errors to the coordinator.
    #[derive(Debug)]
    struct Relayed(String);

    impl std::fmt::Display for Relayed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Relayed {}

    /// Every variant has a well-formed code, and only real bugs are XX000.
    #[test]
    fn every_variant_has_a_sqlstate() {
        let all = [
            LochError::DataFusion(DataFusionError::Plan("table 'x' not found".into())),
            LochError::Syntax("x".into()),
            LochError::NotSupported("x".into()),
            LochError::InvalidParameterValue {
                name: "a".into(),
                value: "b".into(),
            },
            LochError::UnknownParameter("x".into()),
            LochError::InvalidParameter("x".into()),
            LochError::Canceled,
            LochError::StatementTimeout,
            LochError::InFailedTransaction,
            LochError::UnknownTicket,
            LochError::UnknownPreparedStatement,
            LochError::TooMany("x".into()),
            LochError::QueueFull("x".into()),
            LochError::NoActiveTransaction("x".into()),
            LochError::InvalidSavepoint("x".into()),
            LochError::UnknownCursor("x".into()),
            LochError::CursorExists("x".into()),
            LochError::InvalidCursorDefinition("x".into()),
            LochError::Internal("x".into()),
            LochError::Catalog(loch_catalog::CatalogError::Invalid("x".into())),
            LochError::PermissionDenied("x".into()),
            LochError::UnknownRole("x".into()),
            LochError::RoleExists("x".into()),
            LochError::SessionRoleGone("x".into()),
            LochError::InvalidGrant("x".into()),
            LochError::ReservedName("x".into()),
            LochError::ObjectInUse("x".into()),
            LochError::DatatypeMismatch("x".into()),
            LochError::WrongObjectType("x".into()),
            LochError::UndefinedColumn("x".into()),
            LochError::UndefinedObject("x".into()),
        ];
        // Every variant is in the list: `ordinal` names each one (a new
        // variant does not compile until it is added there, and then this
        // fails until it is added above).
        let mut seen: Vec<usize> = all.iter().map(ordinal).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, (0..VARIANTS).collect::<Vec<_>>());
        for e in &all {
            let code = e.sqlstate();
            assert_eq!(code.len(), 5, "{e:?}");
            assert!(code.chars().all(|c| c.is_ascii_alphanumeric()), "{e:?}");
            assert_eq!(
                code == "XX000",
                matches!(e, LochError::Internal(_)),
                "{e:?} -> {code}"
            );
        }
    }

    const VARIANTS: usize = 31;

    fn ordinal(e: &LochError) -> usize {
        match e {
            LochError::DataFusion(_) => 0,
            LochError::Syntax(_) => 1,
            LochError::NotSupported(_) => 2,
            LochError::InvalidParameterValue { .. } => 3,
            LochError::UnknownParameter(_) => 4,
            LochError::InvalidParameter(_) => 5,
            LochError::Canceled => 6,
            LochError::StatementTimeout => 7,
            LochError::InFailedTransaction => 8,
            LochError::UnknownTicket => 9,
            LochError::UnknownPreparedStatement => 10,
            LochError::TooMany(_) => 11,
            LochError::Catalog(_) => 12,
            LochError::PermissionDenied(_) => 13,
            LochError::UnknownRole(_) => 14,
            LochError::RoleExists(_) => 15,
            LochError::SessionRoleGone(_) => 16,
            LochError::InvalidGrant(_) => 17,
            LochError::ReservedName(_) => 18,
            LochError::ObjectInUse(_) => 19,
            LochError::DatatypeMismatch(_) => 20,
            LochError::WrongObjectType(_) => 21,
            LochError::UndefinedColumn(_) => 22,
            LochError::UndefinedObject(_) => 23,
            LochError::NoActiveTransaction(_) => 24,
            LochError::InvalidSavepoint(_) => 25,
            LochError::UnknownCursor(_) => 26,
            LochError::CursorExists(_) => 27,
            LochError::InvalidCursorDefinition(_) => 28,
            LochError::Internal(_) => 29,
            LochError::QueueFull(_) => 30,
        }
    }

    /// Re-planning and the 58000 class read the same typed answer; errors
    /// a query raises itself are not a lost executor, however wrapped.
    #[test]
    fn a_lost_executor_is_known_by_type() {
        let unreachable = || {
            DataFusionError::External(Box::new(ExecutorUnreachable {
                url: "http://127.0.0.1:1".into(),
                source: DataFusionError::Execution("connection refused".into()),
            }))
        };
        let lost = [
            unreachable(),
            DataFusionError::Context("stage 2".into(), Box::new(unreachable())),
            DataFusionError::Shared(std::sync::Arc::new(unreachable())),
            DataFusionError::ArrowError(
                Box::new(ArrowError::ExternalError(Box::new(unreachable()))),
                None,
            ),
            DataFusionError::External(Box::new(tonic::Status::unavailable("gone"))),
            // One executor's failure to reach another, relayed as text.
            DataFusionError::External(Box::new(Relayed(
                ExecutorUnreachable {
                    url: "http://127.0.0.1:1".into(),
                    source: DataFusionError::Execution("connection refused".into()),
                }
                .to_string(),
            ))),
            DataFusionError::External(Box::new(LochError::DataFusion(unreachable()))),
        ];
        for e in &lost {
            assert!(executor_lost(e), "{e}");
            assert_eq!(classify_datafusion(e), "58000", "{e}");
        }
        let not_lost = [
            DataFusionError::External(Box::new(LochError::Canceled)),
            DataFusionError::Execution("Divide by zero error".into()),
            DataFusionError::ResourcesExhausted("memory".into()),
            DataFusionError::Plan("table 'x' not found".into()),
        ];
        for e in &not_lost {
            assert!(!executor_lost(e), "{e}");
            assert_ne!(classify_datafusion(e), "58000", "{e}");
        }
    }

    #[test]
    fn datafusion_errors_map_to_postgres_classes() {
        let cases: Vec<(DataFusionError, &str)> = vec![
            (
                DataFusionError::Plan("table 'loch.public.nope' not found".into()),
                "42P01",
            ),
            (
                DataFusionError::Plan("Invalid function 'nope'".into()),
                "42883",
            ),
            (DataFusionError::NotImplemented("x".into()), "0A000"),
            (
                DataFusionError::Plan(
                    "Column in SELECT must be in GROUP BY or an aggregate function".into(),
                ),
                "42803",
            ),
            (
                DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None),
                "22012",
            ),
            (
                DataFusionError::ArrowError(Box::new(ArrowError::CastError("x".into())), None),
                "22P02",
            ),
            (
                DataFusionError::Context(
                    "ctx".into(),
                    Box::new(DataFusionError::ResourcesExhausted("mem".into())),
                ),
                "53200",
            ),
            (
                DataFusionError::External(Box::new(LochError::Canceled)),
                "57014",
            ),
            (DataFusionError::Internal("bug".into()), "XX000"),
            (
                DataFusionError::External(Box::new(tonic::Status::unknown(
                    "h2 protocol error: error reading a body from connection",
                ))),
                "58000",
            ),
            // The same failure met by an executor reading from the dead one,
            // relayed to the coordinator as text.
            (
                DataFusionError::External(Box::new(Relayed(
                    tonic::Status::unknown("h2 protocol error: connection reset").to_string(),
                ))),
                "58000",
            ),
        ];
        for (e, code) in cases {
            assert_eq!(classify_datafusion(&e), code, "{e}");
        }
    }
}
