//! The catalog crate's error type.

use std::path::PathBuf;

use datafusion::error::DataFusionError;

/// Errors raised while opening or changing the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A file or directory under the data directory could not be used.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing generated sample data to Parquet failed.
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The sample generator produced an invalid batch.
    #[error("generating Arrow data: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// DataFusion rejected a table or schema registration.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// The sample generator thread died.
    #[error("sample data generation failed: {0}")]
    Sample(String),
    /// The metadata store could not be read or written.
    #[error("{0}")]
    Store(String),
    /// A schema that does not exist.
    #[error("schema \"{0}\" does not exist")]
    SchemaNotFound(String),
    /// `CREATE SCHEMA` of a schema that exists.
    #[error("schema \"{0}\" already exists")]
    SchemaExists(String),
    /// `DROP SCHEMA` without `CASCADE` of a schema that holds relations.
    #[error(
        "cannot drop schema \"{schema}\" because {count} table(s) or view(s) depend on it (use DROP SCHEMA ... CASCADE)"
    )]
    SchemaNotEmpty { schema: String, count: usize },
    /// A table or view of that name exists already.
    #[error("relation \"{schema}.{name}\" already exists")]
    RelationExists { schema: String, name: String },
    /// A table or view that does not exist.
    #[error("relation \"{schema}.{name}\" does not exist")]
    RelationNotFound { schema: String, name: String },
    /// `DROP TABLE` of a view or `DROP VIEW` of a table.
    #[error("\"{schema}.{name}\" is not a {expected}")]
    WrongKind {
        schema: String,
        name: String,
        expected: &'static str,
    },
    /// A change to an earlier version of a Delta table (time travel is
    /// read-only).
    #[error("{0} is a past version of the table and cannot be changed")]
    PastVersion(String),
    /// `DROP ROLE` of a role that still owns objects.
    #[error(
        "role \"{role}\" cannot be dropped because it owns {objects}: change their owner first"
    )]
    RoleInUse { role: String, objects: String },
    /// A storage credential that does not exist.
    #[error("storage credential \"{0}\" does not exist")]
    CredentialNotFound(String),
    /// `CREATE STORAGE CREDENTIAL` of one that exists.
    #[error("storage credential \"{0}\" already exists")]
    CredentialExists(String),
    /// `DROP STORAGE CREDENTIAL` of one tables still name.
    #[error("cannot drop storage credential \"{name}\" because tables use it: {tables}")]
    CredentialInUse { name: String, tables: String },
    /// A column the statement names that the table does not have.
    #[error("{0}")]
    UnknownColumn(String),
    /// A statement the catalog cannot carry out as written.
    #[error("{0}")]
    Invalid(String),
    /// The schema of a builtin (read-only) schema was to be changed.
    #[error("schema \"{0}\" is read-only")]
    ReadOnly(String),
    /// delta-rs failed: reading the log, committing, or a conflict.
    #[error("{0}")]
    Delta(#[from] deltalake::DeltaTableError),
    /// A Delta table that cannot be read, with where it is (a broken log
    /// or checkpoint names no file of its own).
    #[error("Delta table at {location}: {source}")]
    DeltaAt {
        location: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
}

/// Result type of the catalog crate.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;
