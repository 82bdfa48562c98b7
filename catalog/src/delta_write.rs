//! `INSERT` into a Delta table, written where the rows are and committed
//! once.
//!
//! delta-rs' own `INSERT` sink takes all rows through one partition and one
//! writer on the process that planned the statement. Loch plans an append
//! as two nodes instead:
//!
//! - [`DeltaWriteExec`], one task per input partition, writes Parquet files
//!   into the table's directory with delta-rs' [`DeltaWriter`] (so files,
//!   partition directories and statistics are delta-rs' own) and answers
//!   the `add` actions it made, as JSON rows. It has no state but its
//!   [`WriteSpec`], so datafusion-distributed ships it to the executors
//!   with its input stage ([`DeltaWriteCodec`]): the executors that read the
//!   rows write the files, in parallel, through their own object-store
//!   clients.
//! - [`DeltaCommitExec`], on the coordinator, collects those actions and
//!   makes one commit (delta-rs' `CommitBuilder`), in turn with the other
//!   `INSERT`s of this process into the table. A statement that fails or is
//!   cancelled before the commit leaves only files no version names, which
//!   `VACUUM` removes.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties,
};
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use delta_kernel::table_properties::DataSkippingNumIndexedCols;
use deltalake::DeltaTable;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::delta_datafusion::DataFusionMixins;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add};
use deltalake::operations::write::configs::WriterStatsConfig;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::config::TablePropertiesExt;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::prefix::PrefixStore;
use serde::{Deserialize, Serialize};
use url::Url;

/// What a write task needs to write files of one table: everything is in
/// here, so the task can run on any executor.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteSpec {
    /// The table's root (`file:///…/`, `s3://bucket/path/`).
    pub table: Url,
    /// The schema rows are cast to before writing (delta-rs' input schema).
    pub input_schema: SchemaRef,
    /// The table schema the writer is configured with.
    pub table_schema: SchemaRef,
    pub partition_columns: Vec<String>,
    pub target_file_size: u64,
    /// Columns to keep statistics for: the first n (`None`: all).
    pub num_indexed_cols: Option<u64>,
    pub stats_columns: Option<Vec<String>>,
}

impl WriteSpec {
    /// The spec of an append to `table` at its loaded version; `None` when
    /// Loch's writer does not handle this table (column mapping: delta-rs'
    /// own sink maps column names) and delta-rs' sink should.
    pub fn of(table: &DeltaTable) -> Option<WriteSpec> {
        let state = table.snapshot().ok()?;
        let snapshot = state.snapshot();
        let metadata = snapshot.metadata();
        let mapped = metadata
            .configuration()
            .get("delta.columnMapping.mode")
            .is_some_and(|mode| !mode.eq_ignore_ascii_case("none"));
        if mapped {
            return None;
        }
        let configuration = snapshot.table_configuration();
        let stats = WriterStatsConfig::from_config(configuration);
        Some(WriteSpec {
            table: table.table_url().clone(),
            input_schema: snapshot.input_schema(),
            table_schema: snapshot.read_schema(),
            partition_columns: metadata.partition_columns().to_vec(),
            target_file_size: configuration.table_properties().target_file_size().get(),
            num_indexed_cols: match stats.num_indexed_cols {
                DataSkippingNumIndexedCols::AllColumns => None,
                DataSkippingNumIndexedCols::NumColumns(n) => Some(n),
            },
            stats_columns: stats.stats_columns,
        })
    }

    /// The spec of the first write of a new table with Arrow schema
    /// `schema` (already in Delta's types): delta-rs' defaults, partition
    /// columns last as delta-rs orders them.
    pub fn for_new(table: Url, schema: &Schema, partition_columns: &[String]) -> WriteSpec {
        let (partitions, mut fields): (Vec<_>, Vec<_>) = schema
            .fields()
            .iter()
            .cloned()
            .partition(|f| partition_columns.contains(f.name()));
        for column in partition_columns {
            fields.extend(partitions.iter().filter(|f| f.name() == column).cloned());
        }
        let schema = Arc::new(Schema::new(fields));
        let defaults = delta_kernel::table_properties::TableProperties::default();
        WriteSpec {
            table,
            input_schema: Arc::clone(&schema),
            table_schema: schema,
            partition_columns: partition_columns.to_vec(),
            target_file_size: defaults.target_file_size().get(),
            num_indexed_cols: match defaults.num_indexed_cols() {
                DataSkippingNumIndexedCols::AllColumns => None,
                DataSkippingNumIndexedCols::NumColumns(n) => Some(n),
            },
            stats_columns: None,
        }
    }

    fn writer_config(&self) -> WriterConfig {
        WriterConfig::new(
            Arc::clone(&self.table_schema),
            self.partition_columns.clone(),
            None,
            std::num::NonZeroU64::new(self.target_file_size),
            None,
            match self.num_indexed_cols {
                None => DataSkippingNumIndexedCols::AllColumns,
                Some(n) => DataSkippingNumIndexedCols::NumColumns(n),
            },
            self.stats_columns.clone(),
        )
    }
}

/// The schema [`DeltaWriteExec`] answers: per task one row with the rows it
/// wrote (`add` null), then one row per file with its `add` action (JSON).
fn written_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("rows", DataType::UInt64, false),
        Field::new("add", DataType::Utf8, true),
    ]))
}

/// Writes the rows of each input partition as Parquet files of the table
/// (see the module docs); answers [`written_schema`].
#[derive(Debug)]
pub struct DeltaWriteExec {
    input: Arc<dyn ExecutionPlan>,
    spec: Arc<WriteSpec>,
    properties: Arc<PlanProperties>,
}

impl DeltaWriteExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, spec: Arc<WriteSpec>) -> Self {
        let partitions = input.output_partitioning().partition_count();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(written_schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        DeltaWriteExec {
            input,
            spec,
            properties: Arc::new(properties),
        }
    }

    pub fn spec(&self) -> &WriteSpec {
        &self.spec
    }
}

impl DisplayAs for DeltaWriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "DeltaWriteExec: {}", self.spec.table)
    }
}

impl ExecutionPlan for DeltaWriteExec {
    fn name(&self) -> &str {
        "DeltaWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = one_child("DeltaWriteExec", children)?;
        Ok(Arc::new(DeltaWriteExec::new(input, Arc::clone(&self.spec))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let spec = Arc::clone(&self.spec);
        let store = table_store(&context, &spec.table)?;
        let schema = written_schema();
        let out = Arc::clone(&schema);
        let written = futures::stream::once(async move {
            let (rows, adds) = write_files(input, store, &spec).await?;
            let mut counts = vec![rows];
            let mut actions: Vec<Option<String>> = vec![None];
            for add in adds {
                counts.push(0);
                actions.push(Some(serde_json::to_string(&add).map_err(|e| {
                    DataFusionError::Internal(format!("an add action as JSON: {e}"))
                })?));
            }
            Ok(RecordBatch::try_new(
                out,
                vec![
                    Arc::new(UInt64Array::from(counts)),
                    Arc::new(StringArray::from(actions)),
                ],
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, written)))
    }
}

/// The schema of what a write answers: one `count` row (DataFusion's DML
/// answer, which Loch's Delta writes and changes answer too).
pub(crate) fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

/// The rows a batch of a write's answer ([`count_schema`]) counts; 0 for a
/// batch without that column.
pub fn counted(batch: &RecordBatch) -> u64 {
    batch
        .column_by_name("count")
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        .map_or(0, |c| c.iter().flatten().sum())
}

/// The child of a node that has exactly one (its `with_new_children`).
pub(crate) fn one_child(
    node: &str,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    match <[Arc<dyn ExecutionPlan>; 1]>::try_from(children) {
        Ok([child]) => Ok(child),
        Err(_) => Err(DataFusionError::Internal(format!("{node} has one child"))),
    }
}

/// The object store of the table's root, from the task's runtime (on an
/// executor: its one client per store, set up from the coordinator).
fn table_store(context: &TaskContext, table: &Url) -> DfResult<Arc<dyn ObjectStore>> {
    let store = context
        .runtime_env()
        .object_store_registry
        .get_store(table)?;
    let root = object_store::path::Path::from_url_path(table.path())
        .map_err(|e| DataFusionError::Internal(format!("the path of {table}: {e}")))?;
    Ok(Arc::new(PrefixStore::new(store, root)))
}

/// Writes `input` with delta-rs' writer; the rows written and the files'
/// `add` actions. On an error, uploads in flight are aborted; finished
/// files stay as orphans for `VACUUM`.
async fn write_files(
    mut input: SendableRecordBatchStream,
    store: Arc<dyn ObjectStore>,
    spec: &WriteSpec,
) -> DfResult<(u64, Vec<Add>)> {
    let delta = |e: deltalake::DeltaTableError| DataFusionError::External(Box::new(e));
    let mut writer = DeltaWriter::new(store, spec.writer_config());
    let mut rows = 0u64;
    let outcome = async {
        while let Some(batch) = input.next().await {
            let batch = deltalake::kernel::schema::cast::cast_record_batch(
                &batch?,
                Arc::clone(&spec.input_schema),
                false,
                true,
            )
            .map_err(delta)?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).await.map_err(delta)?;
        }
        Ok::<(), DataFusionError>(())
    }
    .await;
    match outcome {
        Ok(()) => Ok((rows, writer.close().await.map_err(delta)?)),
        Err(e) => {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, "aborting Delta file uploads after a failed write");
            }
            Err(e)
        }
    }
}

/// Where [`DeltaCommitExec`] commits the files.
pub enum CommitTarget {
    /// A new version of an existing table: a `WRITE` (append), in turn
    /// with this process' other appends to it.
    Append {
        table: DeltaTable,
        partition_columns: Vec<String>,
        lock: Arc<tokio::sync::Mutex<()>>,
    },
    /// Version 0 of a new table (`CREATE TABLE … AS`): schema and files in
    /// one commit.
    Create(NewTable),
}

/// A table `CREATE TABLE … AS` makes.
#[derive(Debug, Clone)]
pub struct NewTable {
    pub url: Url,
    pub name: String,
    pub columns: Vec<deltalake::kernel::StructField>,
    pub partition_columns: Vec<String>,
    pub configuration: Vec<(String, String)>,
}

impl CommitTarget {
    fn url(&self) -> &Url {
        match self {
            CommitTarget::Append { table, .. } => table.table_url(),
            CommitTarget::Create(new) => &new.url,
        }
    }
}

/// Commits the files its input wrote as one version of the table (see
/// [`CommitTarget`]); answers one row, `count`.
pub struct DeltaCommitExec {
    input: Arc<dyn ExecutionPlan>,
    target: Arc<CommitTarget>,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for DeltaCommitExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeltaCommitExec")
            .field("table", &self.target.url().as_str())
            .finish()
    }
}

impl DeltaCommitExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, target: Arc<CommitTarget>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        DeltaCommitExec {
            input,
            target,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for DeltaCommitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let kind = match self.target.as_ref() {
            CommitTarget::Append { .. } => "append to",
            CommitTarget::Create(_) => "create",
        };
        write!(f, "DeltaCommitExec: {kind} {}", self.target.url())
    }
}

impl ExecutionPlan for DeltaCommitExec {
    fn name(&self) -> &str {
        "DeltaCommitExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = one_child("DeltaCommitExec", children)?;
        Ok(Arc::new(DeltaCommitExec::new(
            input,
            Arc::clone(&self.target),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "DeltaCommitExec has one partition, not {partition}"
            )));
        }
        let written = self.input.execute(0, context)?;
        let target = Arc::clone(&self.target);
        let schema = count_schema();
        let out = Arc::clone(&schema);
        let committed = futures::stream::once(async move {
            let batches: Vec<RecordBatch> = written.try_collect().await?;
            let (rows, adds) = collect_adds(&batches)?;
            let metrics = serde_json::json!({
                "num_added_files": adds.len(),
                "num_added_rows": rows,
                "num_removed_files": 0,
            });
            let properties = CommitProperties::default()
                .with_metadata([("operationMetrics".to_string(), metrics)]);
            let done = match target.as_ref() {
                // An append of nothing makes no version.
                CommitTarget::Append { .. } if adds.is_empty() => Ok(()),
                CommitTarget::Append {
                    table,
                    partition_columns,
                    lock,
                } => append(table.clone(), adds, partition_columns, lock, properties).await,
                CommitTarget::Create(new) => create(new, adds, properties).await,
            };
            done.map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok(RecordBatch::try_new(
                out,
                vec![Arc::new(UInt64Array::from(vec![rows]))],
            )?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, committed)))
    }
}

/// The rows written and the `add` actions in [`DeltaWriteExec`]'s answers.
fn collect_adds(batches: &[RecordBatch]) -> DfResult<(u64, Vec<Add>)> {
    let mut rows = 0;
    let mut adds = Vec::new();
    for batch in batches {
        let counts = batch
            .column_by_name("rows")
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>());
        let actions = batch
            .column_by_name("add")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>());
        let (Some(counts), Some(actions)) = (counts, actions) else {
            return Err(DataFusionError::Internal(
                "DeltaCommitExec's input is not DeltaWriteExec's answer".into(),
            ));
        };
        rows += counts.iter().flatten().sum::<u64>();
        for i in 0..actions.len() {
            if actions.is_valid(i) {
                adds.push(serde_json::from_str(actions.value(i)).map_err(|e| {
                    DataFusionError::Internal(format!("an add action from a write task: {e}"))
                })?);
            }
        }
    }
    Ok((rows, adds))
}

/// One append commit of `adds`, made while holding the table's turn, on
/// the table brought to its latest version (so it is the next version and
/// delta-rs' conflict retries are for writers outside this process). delta-rs'
/// post-commit hook writes a checkpoint when one is due.
async fn append(
    mut table: DeltaTable,
    adds: Vec<Add>,
    partition_by: &[String],
    lock: &tokio::sync::Mutex<()>,
    properties: CommitProperties,
) -> Result<(), deltalake::DeltaTableError> {
    let _turn = lock.lock().await;
    table.update_incremental(None).await?;
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: (!partition_by.is_empty()).then(|| partition_by.to_vec()),
        predicate: None,
    };
    CommitBuilder::from(properties)
        .with_actions(adds.into_iter().map(Action::Add).collect())
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await?;
    Ok(())
}

/// Version 0 of `new`: protocol, metadata and the files, one commit
/// (delta-rs' `CreateBuilder`, which refuses a location that holds a table).
async fn create(
    new: &NewTable,
    adds: Vec<Add>,
    properties: CommitProperties,
) -> Result<(), deltalake::DeltaTableError> {
    let configuration = new
        .configuration
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())));
    deltalake::operations::create::CreateBuilder::new()
        .with_location(new.url.as_str())
        .with_table_name(new.name.clone())
        .with_columns(new.columns.iter().cloned())
        .with_partition_columns(new.partition_columns.iter().cloned())
        .with_configuration(configuration)
        .with_save_mode(SaveMode::ErrorIfExists)
        .with_actions(adds.into_iter().map(Action::Add))
        .with_commit_properties(properties)
        .await?;
    Ok(())
}

/// The table a `CREATE TABLE … AS` is making, as the target of the insert
/// that writes it: files by [`DeltaWriteExec`] (over the executors when the
/// input is distributed), version 0 by [`DeltaCommitExec`].
#[derive(Debug)]
pub struct NewTableSink {
    spec: Arc<WriteSpec>,
    new: NewTable,
}

impl NewTableSink {
    pub fn new(spec: WriteSpec, new: NewTable) -> Self {
        NewTableSink {
            spec: Arc::new(spec),
            new,
        }
    }
}

#[async_trait::async_trait]
impl TableProvider for NewTableSink {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.spec.input_schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::Internal(format!(
            "{} is being created and cannot be read yet",
            self.new.name
        )))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        _insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let write = Arc::new(DeltaWriteExec::new(input, Arc::clone(&self.spec)));
        let target = CommitTarget::Create(self.new.clone());
        Ok(Arc::new(DeltaCommitExec::new(write, Arc::new(target))))
    }
}

/// How a [`WriteSpec`] travels to an executor.
#[derive(Serialize, Deserialize)]
struct WireSpec {
    table: String,
    /// Arrow IPC stream of the schema, hex.
    input_schema: String,
    table_schema: String,
    partition_columns: Vec<String>,
    target_file_size: u64,
    num_indexed_cols: Option<u64>,
    stats_columns: Option<Vec<String>>,
}

fn schema_bytes(schema: &Schema) -> DfResult<String> {
    let mut bytes = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut bytes, schema)?;
    writer.finish()?;
    drop(writer);
    Ok(hex::encode(bytes))
}

fn schema_from(text: &str) -> DfResult<SchemaRef> {
    let bytes = hex::decode(text)
        .map_err(|e| DataFusionError::Internal(format!("a write task's schema: {e}")))?;
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    Ok(reader.schema())
}

/// Ships [`DeltaWriteExec`] to executors (datafusion-distributed's user
/// codec, registered on the coordinator and on every executor).
#[derive(Debug, Default)]
pub struct DeltaWriteCodec;

impl PhysicalExtensionCodec for DeltaWriteCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let wire: WireSpec = serde_json::from_slice(buf)
            .map_err(|e| DataFusionError::Internal(format!("a write task's plan: {e}")))?;
        let [input] = inputs else {
            return Err(DataFusionError::Internal(
                "a write task has one input".into(),
            ));
        };
        let table = Url::parse(&wire.table)
            .map_err(|e| DataFusionError::Internal(format!("a write task's table: {e}")))?;
        let spec = WriteSpec {
            table,
            input_schema: schema_from(&wire.input_schema)?,
            table_schema: schema_from(&wire.table_schema)?,
            partition_columns: wire.partition_columns,
            target_file_size: wire.target_file_size,
            num_indexed_cols: wire.num_indexed_cols,
            stats_columns: wire.stats_columns,
        };
        Ok(Arc::new(DeltaWriteExec::new(
            Arc::clone(input),
            Arc::new(spec),
        )))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let Some(write) = node.downcast_ref::<DeltaWriteExec>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "Loch cannot send {} to an executor",
                node.name()
            )));
        };
        let spec = write.spec();
        let wire = WireSpec {
            table: spec.table.to_string(),
            input_schema: schema_bytes(&spec.input_schema)?,
            table_schema: schema_bytes(&spec.table_schema)?,
            partition_columns: spec.partition_columns.clone(),
            target_file_size: spec.target_file_size,
            num_indexed_cols: spec.num_indexed_cols,
            stats_columns: spec.stats_columns.clone(),
        };
        serde_json::to_writer(buf, &wire)
            .map_err(|e| DataFusionError::Internal(format!("a write task's plan: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_travel_whole() -> DfResult<()> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let spec = WriteSpec {
            table: Url::parse("s3://bucket/warehouse/t/")
                .map_err(|e| DataFusionError::Internal(e.to_string()))?,
            input_schema: Arc::clone(&schema),
            table_schema: schema,
            partition_columns: vec!["s".into()],
            target_file_size: 1 << 20,
            num_indexed_cols: Some(32),
            stats_columns: None,
        };
        let input: Arc<dyn ExecutionPlan> = Arc::new(
            datafusion::physical_plan::empty::EmptyExec::new(Arc::clone(&spec.input_schema)),
        );
        let node = Arc::new(DeltaWriteExec::new(
            Arc::clone(&input),
            Arc::new(spec.clone()),
        ));
        let codec = DeltaWriteCodec;
        let converter = datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {};
        let mut buf = Vec::new();
        codec.try_encode(node, &mut buf, &converter)?;
        let ctx = TaskContext::default();
        let back = codec.try_decode(&buf, &[input], &ctx, &converter)?;
        let back = back
            .downcast_ref::<DeltaWriteExec>()
            .ok_or_else(|| DataFusionError::Internal("not a DeltaWriteExec".into()))?;
        assert_eq!(back.spec(), &spec);
        // Anything else is not Loch's to encode.
        let other: Arc<dyn ExecutionPlan> = Arc::new(
            datafusion::physical_plan::empty::EmptyExec::new(Arc::clone(&spec.input_schema)),
        );
        assert!(
            codec
                .try_encode(other, &mut Vec::new(), &converter)
                .is_err()
        );
        Ok(())
    }
}
