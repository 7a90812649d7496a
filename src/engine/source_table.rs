//! Sources as tables: what a unit registers under a source's name so the queries that read it
//! scan it directly (no copy in between), each scan counted by the source's `NodeTracker`.
//!
//! Files DataFusion reads natively (CSV, Parquet) come as tables of their own (the connector's
//! `table`): partitioned scans of only the columns a query needs. For the others, a
//! connector's `open` gives a stream of batches; `open_table` opens the source once (which
//! also gives its schema) and serves that stream to the first scan. A second scan of the same
//! table (a query that reads it twice, which the planner materializes, or a retried unit)
//! opens the source again.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;

use super::boundary::{BoundaryExec, NodeTracker, Size};
use super::cursor_read::CursorRead;
use crate::connectors::{self, error, ConnectorError, IoContext};
use crate::domain::cursor::FileMark;
use crate::domain::spec::Source;
use crate::domain::store::DataStore;

/// Opens `source` on `store` and returns it as a table whose scans `tracker` counts (and,
/// for a cursor source, `cursor` watches).
pub async fn open_table(
    source: &Source,
    store: &DataStore,
    io: &IoContext,
    tracker: Arc<NodeTracker>,
    cursor: Option<Arc<CursorRead>>,
) -> Result<Arc<dyn TableProvider>, ConnectorError> {
    let connector: Arc<dyn connectors::SourceConnector> =
        Arc::from(connectors::source_for(store, &io.pools)?);
    if let Some(cursor) = cursor {
        if cursor.reads_files() {
            return new_files_table(connector, source, store, io, tracker, cursor).await;
        }
        return cursor_table(connector, source, io, tracker, cursor).await;
    }
    if let Some(native) = connector.table(source, io).await? {
        return Ok(TrackedTable::native(native, tracker));
    }
    let opened = connector.open(source, io).await?;
    tracker.set_estimate(opened.estimated_rows);
    let schema = opened.stream.schema();
    let partition = Arc::new(SourcePartition {
        schema: Arc::clone(&schema),
        first: Mutex::new(Some(opened.stream)),
        connector,
        source: source.clone(),
        io: io.clone(),
        cursor: None,
    });
    let table = StreamingTable::try_new(schema, vec![partition as Arc<dyn PartitionStream>])
        .map_err(|e| ConnectorError::permanent(error::clean_message(&e)).caused_by(e))?;
    let size = opened.estimated_rows.map(|rows| Size {
        rows,
        bytes: None,
        exact: false,
    });
    Ok(Arc::new(TrackedTable {
        inner: Arc::new(table),
        tracker: Some(tracker),
        size,
        unique: Vec::new(),
    }))
}

/// A `new_files` source as a table: the files its glob names now that no completed flow of the
/// input read (by path, size and modification time), or, when none is new, an empty table with
/// the columns of a file read before.
async fn new_files_table(
    connector: Arc<dyn connectors::SourceConnector>,
    source: &Source,
    store: &DataStore,
    io: &IoContext,
    tracker: Arc<NodeTracker>,
    cursor: Arc<CursorRead>,
) -> Result<Arc<dyn TableProvider>, ConnectorError> {
    let root = connectors::store_path(store)?;
    let (pattern, seen) = (
        source.path.clone(),
        cursor.start.files.clone().unwrap_or_default(),
    );
    let listed = tokio::task::spawn_blocking(move || list_files(&root, pattern.as_deref()))
        .await
        .map_err(|e| ConnectorError::permanent_from("listing the files", e))??;
    if listed.is_empty() {
        // Nothing matches (the files read before were moved away, say): the declared columns.
        let declared = source.csv.as_ref().map(|o| &o.columns).filter(|c| !c.is_empty());
        let Some(columns) = declared.filter(|_| !seen.is_empty()) else {
            let what = if seen.is_empty() {
                "no file was read before"
            } else {
                "the files read before are gone"
            };
            return Err(ConnectorError::permanent(format!(
                "source {}: no file matches {:?} and {what}, so there are no columns to give it: \
                 add a file or declare the columns (csv.columns)",
                source.name,
                source.path.as_deref().unwrap_or_default()
            )));
        };
        let fields = columns
            .iter()
            .map(|(name, ty)| {
                crate::domain::spec::parse_column_type(ty)
                    .map(|dt| datafusion::arrow::datatypes::Field::new(name, dt, true))
                    .map_err(ConnectorError::permanent)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
        return empty_table(schema, tracker, cursor);
    }
    let (new, old): (Vec<_>, Vec<_>) = listed.into_iter().partition(|(_, mark)| !seen.contains(mark));
    let mut only = source.clone();
    let Some((first_old, _)) = old.first().filter(|_| new.is_empty()) else {
        only.only_files = Some(new.iter().map(|(path, _)| path.clone()).collect());
        cursor.read_files(new.into_iter().map(|(_, mark)| mark).collect());
        let native = connector.table(&only, io).await?.ok_or_else(|| {
            ConnectorError::permanent(format!("source {} cannot read new files", source.name))
        })?;
        return Ok(TrackedTable::native(native, tracker));
    };
    // No new file: the columns of one read before, no rows.
    only.only_files = Some(vec![first_old.clone()]);
    let native = connector
        .table(&only, io)
        .await?
        .ok_or_else(|| ConnectorError::permanent(format!("source {} cannot read new files", source.name)))?;
    empty_table(native.table.schema(), tracker, cursor)
}

/// The empty table a `new_files` source with no new file reads.
fn empty_table(
    schema: SchemaRef,
    tracker: Arc<NodeTracker>,
    cursor: Arc<CursorRead>,
) -> Result<Arc<dyn TableProvider>, ConnectorError> {
    let empty = datafusion::datasource::MemTable::try_new(schema, vec![vec![]])
        .map_err(|e| ConnectorError::permanent(error::clean_message(&e)).caused_by(e))?;
    cursor.read_files(Vec::new());
    tracker.set_estimate(Some(0));
    Ok(Arc::new(TrackedTable {
        inner: Arc::new(empty),
        tracker: Some(tracker),
        size: Some(Size {
            rows: 0,
            bytes: Some(0),
            exact: true,
        }),
        unique: Vec::new(),
    }))
}

/// The files `pattern` names under `root`, each with its mark (path relative to `root`).
fn list_files(
    root: &std::path::Path,
    pattern: Option<&str>,
) -> Result<Vec<(std::path::PathBuf, FileMark)>, ConnectorError> {
    let files = connectors::files::matching_files(root, pattern)?;
    let canonical = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    files
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).map_err(|e| {
                ConnectorError::permanent_from(format_args!("cannot read {}", path.display()), e)
            })?;
            let modified = meta.modified().map_err(|e| {
                ConnectorError::permanent_from(format_args!("cannot read {}", path.display()), e)
            })?;
            let relative = path
                .strip_prefix(&canonical)
                .or_else(|_| path.strip_prefix(root))
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let mark = FileMark {
                path: relative,
                size: meta.len(),
                modified_utc: chrono::DateTime::<chrono::Utc>::from(modified)
                    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            };
            Ok((path, mark))
        })
        .collect()
}

/// A cursor source as a table: read through the connector with the cursor's predicate, every
/// scan watched by `cursor`.
async fn cursor_table(
    connector: Arc<dyn connectors::SourceConnector>,
    source: &Source,
    io: &IoContext,
    tracker: Arc<NodeTracker>,
    cursor: Arc<CursorRead>,
) -> Result<Arc<dyn TableProvider>, ConnectorError> {
    let opened = connector.open_filtered(source, &cursor.filter(), io).await?;
    tracker.set_estimate(None);
    let stream = cursor.watch(opened.stream)?;
    let schema = stream.schema();
    let partition = Arc::new(SourcePartition {
        schema: Arc::clone(&schema),
        first: Mutex::new(Some(stream)),
        connector,
        source: source.clone(),
        io: io.clone(),
        cursor: Some(cursor),
    });
    let table = StreamingTable::try_new(schema, vec![partition as Arc<dyn PartitionStream>])
        .map_err(|e| ConnectorError::permanent(error::clean_message(&e)).caused_by(e))?;
    Ok(Arc::new(TrackedTable {
        inner: Arc::new(table),
        tracker: Some(tracker),
        size: None,
        unique: Vec::new(),
    }))
}

/// The one partition of a source read through its connector.
struct SourcePartition {
    schema: SchemaRef,
    /// The stream opened with the table, for the first scan.
    first: Mutex<Option<SendableRecordBatchStream>>,
    connector: Arc<dyn connectors::SourceConnector>,
    source: Source,
    io: IoContext,
    /// A cursor source's filter and watch, for scans after the first.
    cursor: Option<Arc<CursorRead>>,
}

impl fmt::Debug for SourcePartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourcePartition")
            .field("source", &self.source.name)
            .finish()
    }
}

impl PartitionStream for SourcePartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(stream) = first {
            return stream;
        }
        let (connector, source, io) = (Arc::clone(&self.connector), self.source.clone(), self.io.clone());
        let cursor = self.cursor.clone();
        let reopened = futures::stream::once(async move {
            let external = |e: ConnectorError| DataFusionError::External(Box::new(e));
            match cursor {
                None => connector
                    .open(&source, &io)
                    .await
                    .map(|opened| opened.stream)
                    .map_err(external),
                Some(cursor) => {
                    let opened = connector
                        .open_filtered(&source, &cursor.filter(), &io)
                        .await
                        .map_err(external)?;
                    cursor
                        .watch(opened.stream)
                        .map_err(|e| DataFusionError::External(Box::new(e)))
                }
            }
        })
        .try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.schema), reopened))
    }
}

/// A table whose every scan is counted by a node's tracker and/or says how big the table is (a
/// `BoundaryExec` on top of the inner table's scan; projections and filters still reach it).
#[derive(Debug)]
pub struct TrackedTable {
    pub inner: Arc<dyn TableProvider>,
    pub tracker: Option<Arc<NodeTracker>>,
    pub size: Option<Size>,
    /// Sets of columns (by index) its rows are known to be unique on, NULLs counting as one
    /// value (`eager_aggregate::unique_sets`): a checkpoint's, recorded from its plan.
    pub unique: Vec<Vec<usize>>,
}

impl TrackedTable {
    /// A table a connector scans itself, counted by `tracker`, its estimates told to both.
    fn native(native: connectors::SourceTable, tracker: Arc<NodeTracker>) -> Arc<dyn TableProvider> {
        tracker.set_estimate(native.estimated_rows);
        let size = native.estimated_rows.map(|rows| Size {
            rows,
            bytes: native.estimated_bytes,
            exact: false,
        });
        Arc::new(TrackedTable {
            inner: native.table,
            tracker: Some(tracker),
            size,
            unique: Vec::new(),
        })
    }

    /// The size of a scan of some columns: the rows, and the bytes only of a whole row.
    fn scan_size(&self, projection: Option<&Vec<usize>>) -> Option<Size> {
        let all = projection.is_none_or(|p| p.len() == self.inner.schema().fields().len());
        self.size.map(|s| Size {
            bytes: if all { s.bytes } else { None },
            ..s
        })
    }
}

#[async_trait]
impl TableProvider for TrackedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        Ok(Arc::new(BoundaryExec::with(
            self.tracker.clone(),
            self.scan_size(projection),
            plan,
        )))
    }

    async fn scan_with_args<'a>(&self, state: &dyn Session, args: ScanArgs<'a>) -> Result<ScanResult> {
        let size = self.scan_size(args.projection().map(|p| p.to_vec()).as_ref());
        let plan = self.inner.scan_with_args(state, args).await?.into_inner();
        let tracked: Arc<dyn ExecutionPlan> = Arc::new(BoundaryExec::with(self.tracker.clone(), size, plan));
        Ok(tracked.into())
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }
}
