//! Running one DAG node: ingest (source → checkpoint), transform (SQL over checkpoints →
//! checkpoint) or persist (checkpoint → the target's staging area; the flow publishes all its
//! staged outputs at once when it succeeds, see `engine::publish`). Runs on the engine runtime.
//!
//! A source whose only reader is one output is not checkpointed: its ingest streams the rows
//! straight into the output's staging area (source and target work at the same time, nothing
//! is encoded twice) and leaves a marker; the persist node then finds its load already staged.

use std::sync::Arc;

use datafusion::execution::context::SQLOptions;
use datafusion::prelude::ParquetReadOptions;
use futures::StreamExt;

use super::{checkpoint, errors, FlowSession};
use crate::connectors::{self, ConnectorError, IoContext, Load, RowsCallback};
use crate::domain::spec::{Output, Source};
use crate::domain::store::DataStore;

/// What a node does.
#[derive(Debug, Clone)]
pub enum NodeWork {
    Ingest {
        source: Source,
        store: DataStore,
        /// Set when the source's only reader is this output: the ingest stages it directly.
        direct: Option<Box<DirectLoad>>,
    },
    Transform {
        name: String,
        sql: String,
    },
    Persist {
        output: Output,
        load: Load,
        store: DataStore,
    },
}

/// The output a source is streamed into without a checkpoint.
#[derive(Debug, Clone)]
pub struct DirectLoad {
    pub load: Load,
    pub store: DataStore,
}

/// Why a node failed, and whether another attempt may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeError {
    pub message: String,
    pub transient: bool,
}

impl From<ConnectorError> for NodeError {
    fn from(e: ConnectorError) -> Self {
        NodeError {
            message: e.message,
            transient: e.transient,
        }
    }
}

impl NodeError {
    fn permanent(message: impl Into<String>) -> Self {
        NodeError {
            message: message.into(),
            transient: false,
        }
    }
}

/// The SQL a transform may run: queries only.
pub fn query_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Runs `work` for node `name`; returns the rows it produced or staged.
pub async fn run(
    name: &str,
    work: &NodeWork,
    session: &FlowSession,
    io: IoContext,
    on_rows: RowsCallback,
) -> Result<u64, NodeError> {
    match work {
        NodeWork::Ingest {
            source,
            store,
            direct,
        } => {
            let connector = connectors::source_for(store, &io.pools)?;
            // The sink is resolved before the source opens, so a target that cannot be written
            // fails before any rows move.
            let sink = match direct {
                Some(d) => Some((connectors::sink_for(&d.store, &io.pools)?, &d.load)),
                None => None,
            };
            let opened = connector.open(source, &io).await?;
            let estimate = opened.estimated_rows;
            let report: RowsCallback = Arc::new(move |rows, _| on_rows(rows, estimate));
            if let Some((sink, load)) = sink {
                let rows = sink.stage(load, opened.stream, &io, report).await?;
                checkpoint::mark_staged(&session.work_dir, name, rows).map_err(NodeError::permanent)?;
                return Ok(rows);
            }
            let rows = checkpoint::write(&session.work_dir, name, opened.stream, &report).await?;
            checkpoint::register(&session.ctx, &session.work_dir, name)
                .await
                .map_err(NodeError::permanent)?;
            Ok(rows)
        }
        NodeWork::Transform { name: node, sql } => {
            let df = session
                .ctx
                .sql_with_options(sql, query_only())
                .await
                .map_err(|e| NodeError::permanent(errors::sql_error_message(&e, sql)))?;
            let stream = df
                .execute_stream()
                .await
                .map_err(|e| NodeError::permanent(errors::sql_error_message(&e, sql)))?;
            // Errors while the query runs (a bad cast, a division by zero) are SQL errors too.
            let sql_for_errors = sql.clone();
            let schema = stream.schema();
            let stream = Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                schema,
                stream.map(move |r| {
                    r.map_err(|e| {
                        datafusion::error::DataFusionError::External(Box::new(ConnectorError::permanent(
                            errors::sql_error_message(&e, &sql_for_errors),
                        )))
                    })
                }),
            ));
            let rows = checkpoint::write(&session.work_dir, node, stream, &on_rows).await?;
            checkpoint::register(&session.ctx, &session.work_dir, node)
                .await
                .map_err(NodeError::permanent)?;
            Ok(rows)
        }
        NodeWork::Persist { output, load, store } => {
            if let Some(rows) = checkpoint::staged(&session.work_dir, &output.node) {
                // Its source streamed the rows in already.
                on_rows(rows, Some(rows));
                return Ok(rows);
            }
            let connector = connectors::sink_for(store, &io.pools)?;
            let file = checkpoint::path(&session.work_dir, &output.node);
            let total = checkpoint::rows(&session.work_dir, &output.node);
            let unreadable = |e: datafusion::error::DataFusionError| {
                NodeError::permanent(format!(
                    "reading the result of {}: {}",
                    output.node,
                    errors::clean_message(&e)
                ))
            };
            let df = session
                .ctx
                .read_parquet(file.to_string_lossy().as_ref(), ParquetReadOptions::default())
                .await
                .map_err(unreadable)?;
            let stream = df.execute_stream().await.map_err(unreadable)?;
            let report: RowsCallback = Arc::new(move |rows, _| on_rows(rows, total));
            Ok(connector.stage(load, stream, &io, report).await?)
        }
    }
}
