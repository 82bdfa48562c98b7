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
}

/// Result type of the catalog crate.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;
