//! Node boundaries: a transparent marker around one DAG node's plan inside a bigger query.
//!
//! When a node is inlined into its reader (see `domain::plan`), DataFusion plans and optimizes
//! the reader's query with the node's plan in place, so nothing marks where the node begins. A
//! `NodeBoundary` does, without getting in the optimizer's way: filters, projections and limits
//! are pushed through it, and its physical form (`BoundaryExec`) keeps its input's partitioning
//! and order and forwards filter pushdown. What it adds:
//!
//! - the node's rows (the rows its reader drew from it) and live progress, through a
//!   [`NodeTracker`];
//! - errors raised inside the node carry its name ([`NodeFailure`], from `connectors::error`), so a failing inlined node
//!   is named in the flow's errors, not its reader.

use std::cmp::Ordering as CmpOrdering;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchemaRef, Result};
use datafusion::error::DataFusionError;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterDescription, FilterPushdownPhase, FilterPushdownPropagation,
};
use datafusion::physical_plan::projection::{make_with_child, ProjectionExec};
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    RecordBatchStream, Statistics, StatisticsArgs,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::{Stream, StreamExt};

use crate::connectors::error::{self, ConnectorError, NodeFailure};
use crate::connectors::RowsCallback;

/// The rows one DAG node has produced so far in a running unit, reported as they move.
pub struct NodeTracker {
    name: String,
    /// The node's SQL (transforms), so an error inside it gets its position.
    sql: Option<String>,
    rows: AtomicU64,
    /// Expected total, 0 = unknown (set by sources that can tell).
    estimate: AtomicU64,
    report: Option<RowsCallback>,
    /// The first error raised inside this node (not in the nodes it reads), as people read it.
    failure: Mutex<Option<Failure>>,
    /// Columns that must hold no NULL (an output's contract, `nullable: false`).
    not_null: Mutex<Vec<String>>,
}

/// An error raised inside a node, kept by its tracker so it survives however the error is
/// converted on its way out (a sink turns it into a connector error, for instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// Another attempt may succeed (a connection reset).
    pub transient: bool,
    /// The memory limit was reached.
    pub resources: bool,
}

impl Failure {
    /// `e` as people read it; `sql` gives SQL errors their position.
    pub fn of(e: &DataFusionError, sql: Option<&str>) -> Failure {
        let connector = error::find_connector_error(e);
        let resources = error::is_resources_exhausted(e);
        let message = match (connector, sql) {
            (Some(c), _) => c.message.clone(),
            // Not the SQL's fault: no position.
            _ if resources => format!("out of memory: {}", error::clean_message(e)),
            (None, Some(sql)) => super::errors::sql_error_message(e, sql),
            (None, None) => error::clean_message(e),
        };
        Failure {
            message,
            transient: connector.is_some_and(ConnectorError::is_transient),
            resources,
        }
    }
}

impl fmt::Debug for NodeTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTracker")
            .field("name", &self.name)
            .field("rows", &self.rows())
            .finish()
    }
}

impl NodeTracker {
    /// A tracker for node `name`; `report` receives (rows so far, expected total) after every
    /// batch and should throttle itself.
    pub fn new(name: impl Into<String>, sql: Option<String>, report: Option<RowsCallback>) -> Arc<Self> {
        Arc::new(NodeTracker {
            name: name.into(),
            sql,
            rows: AtomicU64::new(0),
            estimate: AtomicU64::new(0),
            report,
            failure: Mutex::new(None),
            not_null: Mutex::new(Vec::new()),
        })
    }

    /// Makes a NULL in any of `columns` an error of this node (checked on every batch).
    pub fn forbid_nulls(&self, columns: Vec<String>) {
        *self.not_null.lock().unwrap_or_else(|p| p.into_inner()) = columns;
    }

    /// The error for a NULL in a column that must hold none, if `batch` has one.
    fn null_violation(&self, batch: &RecordBatch) -> Option<DataFusionError> {
        let columns = self.not_null.lock().unwrap_or_else(|p| p.into_inner());
        let schema = batch.schema();
        columns.iter().find_map(|name| {
            let index = schema.index_of(name).ok()?;
            let nulls = batch.column(index).null_count();
            (nulls > 0).then(|| {
                DataFusionError::Execution(format!(
                    "column {name} is declared nullable: false, but the result has a NULL in it"
                ))
            })
        })
    }

    /// The first error raised inside this node, if one was.
    pub fn failure(&self) -> Option<Failure> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records `e` as raised inside this node (the first one wins).
    pub fn fail(&self, e: &DataFusionError) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            *failure = Some(Failure::of(e, self.sql.as_deref()));
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Sets the expected total (a source that knows its size).
    pub fn set_estimate(&self, rows: Option<u64>) {
        self.estimate.store(rows.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn add(&self, rows: u64) {
        let now = self.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        if let Some(report) = &self.report {
            let estimate = match self.estimate.load(Ordering::Relaxed) {
                0 => None,
                n => Some(n),
            };
            report(now, estimate);
        }
    }

    /// Starts again (a new attempt).
    pub fn reset(&self) {
        self.rows.store(0, Ordering::Relaxed);
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The innermost node failure inside `e`, if a boundary tagged it.
pub fn find_node_failure(e: &DataFusionError) -> Option<&NodeFailure> {
    match e {
        DataFusionError::External(inner) => inner.downcast_ref::<NodeFailure>().or_else(|| {
            inner
                .downcast_ref::<DataFusionError>()
                .and_then(find_node_failure)
        }),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            find_node_failure(inner)
        }
        DataFusionError::Shared(inner) => find_node_failure(inner),
        DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
            datafusion::arrow::error::ArrowError::ExternalError(ext) => ext
                .downcast_ref::<NodeFailure>()
                .or_else(|| ext.downcast_ref::<DataFusionError>().and_then(find_node_failure)),
            _ => None,
        },
        _ => None,
    }
}

/// `e`, tagged as raised in `tracker`'s node unless an inner boundary already tagged it.
fn tag(tracker: &NodeTracker, e: DataFusionError) -> DataFusionError {
    if find_node_failure(&e).is_some() {
        return e;
    }
    tracker.fail(&e);
    DataFusionError::External(Box::new(NodeFailure {
        node: tracker.name.clone(),
        error: e,
    }))
}

/// Wraps `plan` (node `tracker.name()`'s plan) in a boundary.
pub fn wrap(plan: LogicalPlan, tracker: Arc<NodeTracker>) -> LogicalPlan {
    LogicalPlan::Extension(Extension {
        node: Arc::new(NodeBoundary { tracker, input: plan }),
    })
}

/// The logical boundary: schema and rows of its input, unchanged.
#[derive(Debug, Clone)]
pub struct NodeBoundary {
    tracker: Arc<NodeTracker>,
    input: LogicalPlan,
}

impl PartialEq for NodeBoundary {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.tracker, &other.tracker) && self.input == other.input
    }
}

impl Eq for NodeBoundary {}

impl PartialOrd for NodeBoundary {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        match self.tracker.name.cmp(&other.tracker.name) {
            CmpOrdering::Equal => self.input.partial_cmp(&other.input),
            other => Some(other),
        }
    }
}

impl Hash for NodeBoundary {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.tracker.name.hash(state);
        self.input.hash(state);
    }
}

impl UserDefinedLogicalNodeCore for NodeBoundary {
    fn name(&self) -> &str {
        "NodeBoundary"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    /// Every filter may move below the boundary: it changes which rows the node yields, not
    /// what they are.
    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        HashSet::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "NodeBoundary: {}", self.tracker.name)
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        let input = inputs
            .pop()
            .ok_or_else(|| DataFusionError::Internal("NodeBoundary needs one input".into()))?;
        Ok(NodeBoundary {
            tracker: Arc::clone(&self.tracker),
            input,
        })
    }

    /// Columns its reader does not need are not computed either.
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        Some(vec![output_columns.to_vec()])
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }
}

/// How big a table is, as far as Sluice knows, for the planner's choices (which side of a join
/// to build, whether to partition it) where the scan beneath cannot tell: CSV files, database
/// streams and Arrow IPC checkpoints report no statistics of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub rows: u64,
    pub bytes: Option<u64>,
    /// Counted (a checkpoint), not estimated (a source).
    pub exact: bool,
}

impl Size {
    /// `stats` with this size wherever it knows nothing (per partition: an even share).
    fn fill(&self, stats: &mut Statistics, partitions: Option<usize>) {
        use datafusion::common::stats::Precision;
        let share = |n: u64| match partitions {
            Some(p) if p > 1 => (n / p as u64) as usize,
            _ => n as usize,
        };
        let precise = |n: usize| {
            if self.exact && partitions.is_none() {
                Precision::Exact(n)
            } else {
                Precision::Inexact(n)
            }
        };
        if stats.num_rows == Precision::Absent {
            stats.num_rows = precise(share(self.rows));
        }
        if let (Precision::Absent, Some(bytes)) = (&stats.total_byte_size, self.bytes) {
            stats.total_byte_size = precise(share(bytes));
        }
    }
}

/// The physical boundary: passes batches through, counting them and naming errors (with a
/// tracker), and says how big its input is when the input cannot (with a size).
#[derive(Debug)]
pub struct BoundaryExec {
    tracker: Option<Arc<NodeTracker>>,
    size: Option<Size>,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl BoundaryExec {
    pub fn new(tracker: Arc<NodeTracker>, input: Arc<dyn ExecutionPlan>) -> Self {
        Self::with(Some(tracker), None, input)
    }

    /// A boundary with a tracker, a size, both or neither.
    pub fn with(
        tracker: Option<Arc<NodeTracker>>,
        size: Option<Size>,
        input: Arc<dyn ExecutionPlan>,
    ) -> Self {
        let properties = Arc::clone(input.properties());
        BoundaryExec {
            tracker,
            size,
            input,
            properties,
        }
    }
}

impl DisplayAs for BoundaryExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BoundaryExec:")?;
        if let Some(t) = &self.tracker {
            write!(f, " node={}", t.name)?;
        }
        if let Some(s) = &self.size {
            write!(f, " rows={}", s.rows)?;
        }
        Ok(())
    }
}

impl ExecutionPlan for BoundaryExec {
    fn name(&self) -> &str {
        "BoundaryExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
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
            .ok_or_else(|| DataFusionError::Internal("BoundaryExec needs one child".into()))?;
        Ok(Arc::new(BoundaryExec::with(
            self.tracker.clone(),
            self.size,
            input,
        )))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let Some(tracker) = &self.tracker else {
            return self.input.execute(partition, context);
        };
        let inner = self
            .input
            .execute(partition, context)
            .map_err(|e| tag(tracker, e))?;
        Ok(Box::pin(BoundaryStream {
            schema: inner.schema(),
            inner,
            tracker: Arc::clone(tracker),
        }))
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        let stats = input_stats
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("BoundaryExec without input statistics".into()))?;
        let Some(size) = &self.size else {
            return Ok(stats);
        };
        let mut stats = stats.as_ref().clone();
        let partitions = args
            .partition()
            .map(|_| self.input.output_partitioning().partition_count());
        size.fill(&mut stats, partitions);
        Ok(Arc::new(stats))
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }

    fn try_swapping_with_projection(
        &self,
        projection: &ProjectionExec,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        // The projection goes below, so the scan underneath can skip columns (and the bytes
        // known of the whole table no longer say how big it is).
        let below = make_with_child(projection, &self.input)?;
        let size = self.size.map(|s| Size { bytes: None, ..s });
        Ok(Some(Arc::new(BoundaryExec::with(
            self.tracker.clone(),
            size,
            below,
        ))))
    }

    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        Ok(FilterPushdownPropagation::if_all(child_pushdown_result))
    }
}

struct BoundaryStream {
    schema: SchemaRef,
    inner: SendableRecordBatchStream,
    tracker: Arc<NodeTracker>,
}

impl Stream for BoundaryStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(batch))) => {
                if let Some(e) = self.tracker.null_violation(&batch) {
                    return Poll::Ready(Some(Err(tag(&self.tracker, e))));
                }
                self.tracker.add(batch.num_rows() as u64);
                Poll::Ready(Some(Ok(batch)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(tag(&self.tracker, e)))),
            other => other,
        }
    }
}

impl RecordBatchStream for BoundaryStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

/// Plans `NodeBoundary` nodes.
struct BoundaryPlanner;

#[async_trait]
impl ExtensionPlanner for BoundaryPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(boundary) = node.as_any().downcast_ref::<NodeBoundary>() else {
            return Ok(None);
        };
        let input = physical_inputs
            .first()
            .ok_or_else(|| DataFusionError::Internal("NodeBoundary without input".into()))?;
        Ok(Some(Arc::new(BoundaryExec::new(
            Arc::clone(&boundary.tracker),
            Arc::clone(input),
        ))))
    }
}

/// DataFusion's planner, taught node boundaries.
#[derive(Debug, Default)]
pub struct SluiceQueryPlanner;

#[async_trait]
impl QueryPlanner for SluiceQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(BoundaryPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::stats::Precision;

    #[test]
    fn a_size_fills_only_what_the_scan_does_not_know() {
        let schema = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        let size = Size {
            rows: 1000,
            bytes: Some(8000),
            exact: true,
        };
        let mut unknown = Statistics::new_unknown(&schema);
        size.fill(&mut unknown, None);
        assert_eq!(unknown.num_rows, Precision::Exact(1000));
        assert_eq!(unknown.total_byte_size, Precision::Exact(8000));
        let mut per_partition = Statistics::new_unknown(&schema);
        size.fill(&mut per_partition, Some(4));
        assert_eq!(per_partition.num_rows, Precision::Inexact(250));
        let mut known = Statistics::new_unknown(&schema);
        known.num_rows = Precision::Exact(7);
        size.fill(&mut known, None);
        assert_eq!(known.num_rows, Precision::Exact(7), "the scan's own numbers win");
    }
}
