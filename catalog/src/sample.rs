//! The bundled TPC-H sample data set.
//!
//! Generated in-process with the `tpchgen` / `tpchgen-arrow` crates (the Rust
//! port of dbgen, same rows) and written as Parquet, several files per big
//! table so scans have real parallelism. Generation goes to a temporary
//! directory that is renamed into place only when complete, so an interrupted
//! first start never leaves a half-written sample behind: the next start
//! simply generates it again.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

use crate::error::{CatalogError, Result};

/// The eight TPC-H tables, in the order they are generated.
pub const TPCH_TABLES: [&str; 8] = [
    "lineitem", "orders", "partsupp", "part", "customer", "supplier", "nation", "region",
];

/// Rows per Parquet row group (DataFusion parallelises within files by row group too).
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Returns the directory holding the TPC-H sample at `scale` under
/// `data_dir`, generating it first when it does not exist yet.
pub fn ensure_tpch(data_dir: &Path, scale: f64) -> Result<PathBuf> {
    let root = data_dir.join("sample");
    let dir = root.join(format!("tpch-sf{scale}"));
    if dir.is_dir() {
        return Ok(dir);
    }
    let tmp = root.join(format!("tpch-sf{scale}.tmp-{}", std::process::id()));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CatalogError::Io { path, source }
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    tracing::info!(scale, dir = %dir.display(), "generating the TPC-H sample data set");
    write_tpch(&tmp, scale)?;
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        // Another process finished the same sample first: use theirs.
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.is_dir() {
            return Err(io(&dir)(e));
        }
    }
    Ok(dir)
}

/// Writes all eight TPC-H tables at `scale` as Parquet under `dir/<table>/`.
pub fn write_tpch(dir: &Path, scale: f64) -> Result<()> {
    // Big tables are split into several files; one writer thread per file,
    // at most as many at once as there are cores.
    let parts = ((scale * 8.0).ceil() as i32).clamp(2, 64);
    let mut jobs: Vec<(&'static str, i32, i32)> = Vec::new();
    for table in TPCH_TABLES {
        let n = match table {
            "nation" | "region" | "supplier" => 1,
            _ => parts,
        };
        for part in 1..=n {
            jobs.push((table, part, n));
        }
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let jobs = Arc::new(std::sync::Mutex::new(jobs));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let jobs = Arc::clone(&jobs);
                scope.spawn(move || -> Result<()> {
                    loop {
                        let job = jobs
                            .lock()
                            .map_err(|e| CatalogError::Sample(e.to_string()))?
                            .pop();
                        let Some((table, part, n)) = job else {
                            return Ok(());
                        };
                        write_part(dir, table, scale, part, n)?;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| CatalogError::Sample("generator thread panicked".into()))?
            })
            .collect::<Result<Vec<()>>>()
    })?;
    Ok(())
}

fn write_part(dir: &Path, table: &str, scale: f64, part: i32, n: i32) -> Result<()> {
    type Batches = Box<dyn Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>>>;
    let (schema, batches): (SchemaRef, Batches) = match table {
        "lineitem" => (
            LineItemArrow::schema_ref(),
            Box::new(LineItemArrow::new(LineItemGenerator::new(scale, part, n))),
        ),
        "orders" => (
            OrderArrow::schema_ref(),
            Box::new(OrderArrow::new(OrderGenerator::new(scale, part, n))),
        ),
        "partsupp" => (
            PartSuppArrow::schema_ref(),
            Box::new(PartSuppArrow::new(PartSuppGenerator::new(scale, part, n))),
        ),
        "part" => (
            PartArrow::schema_ref(),
            Box::new(PartArrow::new(PartGenerator::new(scale, part, n))),
        ),
        "customer" => (
            CustomerArrow::schema_ref(),
            Box::new(CustomerArrow::new(CustomerGenerator::new(scale, part, n))),
        ),
        "supplier" => (
            SupplierArrow::schema_ref(),
            Box::new(SupplierArrow::new(SupplierGenerator::new(scale, part, n))),
        ),
        "nation" => (
            NationArrow::schema_ref(),
            Box::new(NationArrow::new(NationGenerator::new(scale, part, n))),
        ),
        "region" => (
            RegionArrow::schema_ref(),
            Box::new(RegionArrow::new(RegionGenerator::new(scale, part, n))),
        ),
        other => return Err(CatalogError::Sample(format!("unknown TPC-H table {other}"))),
    };
    let table_dir = dir.join(table);
    std::fs::create_dir_all(&table_dir).map_err(|source| CatalogError::Io {
        path: table_dir.clone(),
        source,
    })?;
    let path = table_dir.join(format!("part-{part:03}.parquet"));
    let file = File::create(&path).map_err(|source| CatalogError::Io {
        path: path.clone(),
        source,
    })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(props))?;
    for batch in batches {
        writer.write(&batch?)?;
    }
    writer.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_every_table_once_and_reuses_it() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| CatalogError::Sample(e.to_string()))?;
        let dir = ensure_tpch(tmp.path(), 0.01)?;
        for table in TPCH_TABLES {
            let files = std::fs::read_dir(dir.join(table))
                .map_err(|e| CatalogError::Sample(e.to_string()))?
                .count();
            assert!(files >= 1, "{table} has no files");
        }
        let lineitem_files = std::fs::read_dir(dir.join("lineitem"))
            .map_err(|e| CatalogError::Sample(e.to_string()))?
            .count();
        assert!(lineitem_files >= 2, "lineitem should be split into files");
        // A second call finds the finished directory and does not regenerate.
        let marker = dir.join("lineitem").join("part-001.parquet");
        let before = std::fs::metadata(&marker)
            .and_then(|m| m.modified())
            .map_err(|e| CatalogError::Sample(e.to_string()))?;
        let again = ensure_tpch(tmp.path(), 0.01)?;
        assert_eq!(again, dir);
        let after = std::fs::metadata(&marker)
            .and_then(|m| m.modified())
            .map_err(|e| CatalogError::Sample(e.to_string()))?;
        assert_eq!(before, after);
        Ok(())
    }
}
