//! A table whose scans map every batch of another table's scan: how a file source adds what
//! DataFusion's own reader does not do (typing columns read as text, locating a bad value by
//! file and line) while keeping that reader's partitions and projections.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties, RecordBatchStream,
};
use futures::{Stream, StreamExt};

/// Turns one batch of the inner scan into one batch of `schema` (the projected output schema).
pub type MapBatch = Arc<dyn Fn(RecordBatch, &SchemaRef) -> Result<RecordBatch> + Send + Sync>;

/// Rewrites an error of the inner scan (to say where it happened).
pub type MapError = Arc<dyn Fn(DataFusionError) -> DataFusionError + Send + Sync>;

/// `inner`, seen with `schema` (same columns, possibly other types), every batch mapped.
pub struct MappedTable {
    pub inner: Arc<dyn TableProvider>,
    pub schema: SchemaRef,
    pub map_batch: MapBatch,
    pub map_error: MapError,
}

impl fmt::Debug for MappedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedTable")
            .field("schema", &self.schema)
            .finish()
    }
}

#[async_trait]
impl TableProvider for MappedTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = self.inner.scan(state, projection, &[], limit).await?;
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => Arc::clone(&self.schema),
        };
        Ok(Arc::new(MappedExec::new(
            input,
            schema,
            Arc::clone(&self.map_batch),
            Arc::clone(&self.map_error),
        )))
    }
}

/// Maps every batch of its input; keeps its partitioning.
pub struct MappedExec {
    input: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    map_batch: MapBatch,
    map_error: MapError,
    properties: Arc<PlanProperties>,
}

impl MappedExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        schema: SchemaRef,
        map_batch: MapBatch,
        map_error: MapError,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        MappedExec {
            input,
            schema,
            map_batch,
            map_error,
            properties,
        }
    }
}

impl fmt::Debug for MappedExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedExec")
            .field("schema", &self.schema)
            .finish()
    }
}

impl DisplayAs for MappedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "MappedExec")
    }
}

impl ExecutionPlan for MappedExec {
    fn name(&self) -> &str {
        "MappedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("MappedExec needs one child".into()))?;
        Ok(Arc::new(MappedExec::new(
            input,
            Arc::clone(&self.schema),
            Arc::clone(&self.map_batch),
            Arc::clone(&self.map_error),
        )))
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let inner = self
            .input
            .execute(partition, context)
            .map_err(|e| (self.map_error)(e))?;
        Ok(Box::pin(MappedStream {
            inner,
            schema: Arc::clone(&self.schema),
            map_batch: Arc::clone(&self.map_batch),
            map_error: Arc::clone(&self.map_error),
        }))
    }
}

struct MappedStream {
    inner: SendableRecordBatchStream,
    schema: SchemaRef,
    map_batch: MapBatch,
    map_error: MapError,
}

impl Stream for MappedStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(batch))) => Poll::Ready(Some((self.map_batch)(batch, &self.schema))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err((self.map_error)(e)))),
            other => other,
        }
    }
}

impl RecordBatchStream for MappedStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}
