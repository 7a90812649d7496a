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
//! - errors raised inside the node carry its name ([`NodeFailure`]), so a failing inlined node
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
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, RecordBatchStream, Statistics,
    StatisticsArgs,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::{Stream, StreamExt};

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
        let connector = super::errors::find_connector_error(e);
        let resources = super::errors::is_resources_exhausted(e);
        let message = match (connector, sql) {
            (Some(c), _) => c.message.clone(),
            // Not the SQL's fault: no position.
            _ if resources => format!("out of memory: {}", super::errors::clean_message(e)),
            (None, Some(sql)) => super::errors::sql_error_message(e, sql),
            (None, None) => super::errors::clean_message(e),
        };
        Failure {
            message,
            transient: connector.is_some_and(|c| c.transient),
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

/// An error raised inside node `node` of a unit.
#[derive(Debug)]
pub struct NodeFailure {
    pub node: String,
    pub error: DataFusionError,
}

impl fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.node, self.error)
    }
}

impl std::error::Error for NodeFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
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

/// The physical boundary: passes batches through, counting them and naming errors.
#[derive(Debug)]
pub struct BoundaryExec {
    tracker: Arc<NodeTracker>,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl BoundaryExec {
    pub fn new(tracker: Arc<NodeTracker>, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::clone(input.properties());
        BoundaryExec {
            tracker,
            input,
            properties,
        }
    }
}

impl DisplayAs for BoundaryExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BoundaryExec: node={}", self.tracker.name)
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
        Ok(Arc::new(BoundaryExec::new(Arc::clone(&self.tracker), input)))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let inner = self
            .input
            .execute(partition, context)
            .map_err(|e| tag(&self.tracker, e))?;
        Ok(Box::pin(BoundaryStream {
            schema: inner.schema(),
            inner,
            tracker: Arc::clone(&self.tracker),
        }))
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        input_stats
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("BoundaryExec without input statistics".into()))
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
        // The projection goes below, so the scan underneath can skip columns.
        let below = make_with_child(projection, &self.input)?;
        Ok(Some(Arc::new(BoundaryExec::new(
            Arc::clone(&self.tracker),
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
