//! Connectors: turn a store plus a table, query or path into a stream of Arrow record batches,
//! and a stream of batches into a table or file, atomically. They know nothing of flows: they
//! get a cancellation token and report rows through a callback. Sources only read: a source
//! query runs as exactly one statement, read-only (a read-only transaction, or SQLite's
//! read-only connection).
//!
//! | engine  | source                         | target                                  |
//! |---------|--------------------------------|-----------------------------------------|
//! | csv     | files (glob), via DataFusion   | `<path>/<table>.csv`, temp file renamed |
//! | parquet | files (glob) or datasets       | `<path>/<table>.parquet` or a dataset   |
//! | sqlite  | table or query, via sqlx       | table, staged and swapped in one txn    |
//! | postgres| table or query, binary COPY    | binary COPY into a staging table; one txn |
//! | mysql   | table or query, text protocol  | multi-row INSERTs in one txn; RENAME TABLE |

pub mod arrow_sql;
pub mod error;
pub mod files;
pub mod fsutil;
pub mod mapped;
pub mod merge;
pub mod mysql;
pub mod paths;
pub mod pools;
pub mod postgres;
pub mod relational;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use tokio_util::sync::CancellationToken;

pub use error::ConnectorError;

use crate::domain::spec::{Source, WriteMode};
use crate::domain::store::{DataStore, StoreEngine, StoreKind};

/// Reports rows moved so far, and the expected total when known.
pub type RowsCallback = Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

/// What every connector call gets besides its arguments.
#[derive(Clone)]
pub struct IoContext {
    /// The flow's DataFusion session (file sources read through it).
    pub session: SessionContext,
    pub cancel: CancellationToken,
    pub batch_size: usize,
    /// The connection pools of database stores.
    pub pools: pools::Pools,
}

/// A source, opened: its rows as a stream, and how many to expect if the store can tell.
pub struct Opened {
    pub stream: SendableRecordBatchStream,
    pub estimated_rows: Option<u64>,
}

/// A source as a table DataFusion scans itself: partitioned, reading only the columns a query
/// needs (and, for Parquet, skipping what its filters rule out).
pub struct SourceTable {
    pub table: Arc<dyn TableProvider>,
    pub estimated_rows: Option<u64>,
    /// About how many bytes its rows take (for the planner's join choices).
    pub estimated_bytes: Option<u64>,
}

/// The predicate of a cursor source: rows whose `column` is at least `after` (`null`: every
/// row, NULL cursors too, so that they can be counted). The value is bound as a parameter and
/// cast by the database to the column's type; it is never spliced into the SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct CursorFilter {
    pub column: String,
    pub after: serde_json::Value,
}

impl CursorFilter {
    /// The mark as text (`None`: no mark). Timestamps keep their ISO 8601 form.
    pub fn after_text(&self) -> Option<String> {
        match &self.after {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

#[async_trait]
pub trait SourceConnector: Send + Sync {
    async fn open(&self, source: &Source, ctx: &IoContext) -> Result<Opened, ConnectorError>;

    /// Like `open`, reading only the rows that pass `filter` (a cursor source).
    async fn open_filtered(
        &self,
        source: &Source,
        filter: &CursorFilter,
        _ctx: &IoContext,
    ) -> Result<Opened, ConnectorError> {
        Err(ConnectorError::permanent(format!(
            "source {}: this store cannot read with a cursor (column {})",
            source.name, filter.column
        )))
    }

    /// The source as a table, for formats DataFusion reads natively; `None`: read it through
    /// `open` (one stream).
    async fn table(&self, _source: &Source, _ctx: &IoContext) -> Result<Option<SourceTable>, ConnectorError> {
        Ok(None)
    }
}

/// One output of a flow, as a sink stages and publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// The target table (or file / dataset name).
    pub table: String,
    pub mode: WriteMode,
    /// The key columns of a `merge` load (empty for the other modes).
    pub unique_key: Vec<String>,
    /// Unique per flow and output (`f12_0`): names the staging area, so a retried or resumed
    /// flow finds its own staged data to replace, publish or discard.
    pub key: String,
}

/// Writes happen in two steps, so that a flow changes its targets only if it succeeds, and all
/// at once: each persist node *stages* its output (durable, invisible to readers of the
/// target); when every node of the flow has succeeded, the flow *publishes* all its loads
/// together; a failed or cancelled flow *discards* them.
#[async_trait]
pub trait SinkConnector: Send + Sync {
    /// Loads every batch of `input` into the staging area of `load`, replacing anything staged
    /// under the same key. Durable when it returns; on error or cancellation (the future
    /// dropped) nothing half-written reaches the target: what was written is at most in the
    /// staging area (SQLite commits its staging table on the way), which `discard` removes and
    /// a new `stage` replaces. Returns the rows staged.
    async fn stage(
        &self,
        load: &Load,
        input: SendableRecordBatchStream,
        ctx: &IoContext,
        on_rows: RowsCallback,
    ) -> Result<u64, ConnectorError>;

    /// Like `stage`, for a query's result: a sink that can write partitions in parallel
    /// overrides this; the others take the result as one stream.
    async fn stage_frame(
        &self,
        load: &Load,
        input: DataFrame,
        ctx: &IoContext,
        on_rows: RowsCallback,
    ) -> Result<u64, ConnectorError> {
        let stream = input
            .execute_stream()
            .await
            .map_err(|e| error::to_connector_error(e, "running the query to write"))?;
        self.stage(load, stream, ctx, on_rows).await
    }

    /// Makes every staged load visible: in one transaction where the store allows it.
    /// Idempotent: a load already published (nothing staged under its key) is skipped.
    /// Returns notes for the flow's log (how a merge was done, for instance).
    async fn publish(&self, loads: &[Load]) -> Result<Vec<String>, ConnectorError>;

    /// Removes whatever is staged for these loads.
    async fn discard(&self, loads: &[Load]) -> Result<(), ConnectorError>;
}

/// The connector that reads `store`.
pub fn source_for(
    store: &DataStore,
    pools: &pools::Pools,
) -> Result<Box<dyn SourceConnector>, ConnectorError> {
    match (store.kind, store.engine) {
        (StoreKind::File, StoreEngine::Csv) => Ok(Box::new(files::CsvSource::new(store)?)),
        (StoreKind::File, StoreEngine::Parquet) => Ok(Box::new(files::ParquetFileSource::new(store)?)),
        (StoreKind::ColumnarDb, StoreEngine::Parquet) => {
            Ok(Box::new(files::ParquetDatasetSource::new(store)?))
        }
        (StoreKind::RelationalDb, StoreEngine::Sqlite) => Ok(Box::new(sqlite::SqliteSource::new(store)?)),
        (StoreKind::RelationalDb, StoreEngine::Postgres) => {
            Ok(Box::new(postgres::PostgresSource::new(store, pools)?))
        }
        (StoreKind::RelationalDb, StoreEngine::Mysql) => Ok(Box::new(mysql::MysqlSource::new(store, pools)?)),
        (_, engine) => Err(unsupported(store, engine, "read")),
    }
}

/// The connector that writes into `store`.
pub fn sink_for(store: &DataStore, pools: &pools::Pools) -> Result<Box<dyn SinkConnector>, ConnectorError> {
    match (store.kind, store.engine) {
        (StoreKind::File, StoreEngine::Csv) => Ok(Box::new(files::CsvFileSink::new(store)?)),
        (StoreKind::File, StoreEngine::Parquet) => Ok(Box::new(files::ParquetFileSink::new(store)?)),
        (StoreKind::ColumnarDb, StoreEngine::Parquet) => Ok(Box::new(files::ParquetDatasetSink::new(store)?)),
        (StoreKind::RelationalDb, StoreEngine::Sqlite) => Ok(Box::new(sqlite::SqliteSink::new(store)?)),
        (StoreKind::RelationalDb, StoreEngine::Postgres) => {
            Ok(Box::new(postgres::PostgresSink::new(store, pools)?))
        }
        (StoreKind::RelationalDb, StoreEngine::Mysql) => Ok(Box::new(mysql::MysqlSink::new(store, pools)?)),
        (_, engine) => Err(unsupported(store, engine, "write")),
    }
}

/// What `POST /data-stores/{id}/check` reports for a reachable store (an unreachable one is a
/// 422 with the reason, so the report needs no success flag).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    pub latency_ms: u64,
    /// The database server's version (for files: the engine that reads them).
    pub server_version: Option<String>,
}

/// Connects to the store (or looks at its files) and reports how long that took.
pub async fn check(store: &DataStore, pools: &pools::Pools) -> Result<CheckReport, ConnectorError> {
    let started = std::time::Instant::now();
    let version = match store.engine {
        StoreEngine::Postgres => Some(postgres::check(store, pools).await?),
        StoreEngine::Mysql => Some(mysql::check(store, pools).await?),
        _ => {
            let path = store_path(store)?;
            let look = match store.engine {
                StoreEngine::Sqlite => path.parent().map(|p| p.to_path_buf()).unwrap_or(path.clone()),
                _ => path.clone(),
            };
            match std::fs::metadata(&look) {
                Ok(_) => None,
                Err(e) => {
                    return Err(ConnectorError::permanent_from(look.display(), e));
                }
            }
        }
    };
    Ok(CheckReport {
        latency_ms: started.elapsed().as_millis() as u64,
        server_version: version,
    })
}

fn unsupported(store: &DataStore, engine: StoreEngine, verb: &str) -> ConnectorError {
    ConnectorError::permanent(format!(
        "store {} ({}): this server cannot {verb} {} stores",
        store.id,
        store.name,
        engine.as_str()
    ))
}

/// The store's path, for file-based connectors.
pub(crate) fn store_path(store: &DataStore) -> Result<std::path::PathBuf, ConnectorError> {
    store
        .path()
        .map(std::path::PathBuf::from)
        .ok_or_else(|| ConnectorError::permanent(format!("store {} has no file path", store.name)))
}
