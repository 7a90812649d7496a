//! Running one unit of a flow (see `domain::plan`) on the engine runtime.
//!
//! A unit registers its inlined nodes in a context of its own — sources as tables that stream
//! from their connector, transforms as views wrapped in a `NodeBoundary` — and then runs its
//! terminal: a materialized node into its checkpoint (every partition at once), an output
//! into its target's staging area (the flow publishes all outputs together when it succeeds,
//! see `engine::publish`; checked against the output's declared columns first, see
//! `domain::contract`), a check into its verdict (`engine::check`), or a node nobody reads
//! into nothing. DataFusion plans the whole unit as one query, so filters and projections
//! reach through the inlined nodes to the scans.
//! Every node's rows are counted by its `NodeTracker`, and an error is blamed on the node it
//! was raised in.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::view::ViewTable;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::boundary::{self, Failure, NodeTracker};
use super::check::{self, CheckOutcome};
use super::cursor_read::CursorRead;
use super::{checkpoint, eager_aggregate, merge_key, source_table, FlowSession};
use crate::connectors::error;
use crate::connectors::{self, ConnectorError, IoContext, Load, RowsCallback};
use crate::domain::checks::Check;
use crate::domain::contract;
use crate::domain::plan::UnitKind;
use crate::domain::spec::{Output, Source, WriteMode};
use crate::domain::store::DataStore;

/// What one node of a unit computes. (A few per unit: their size does not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum NodeWork {
    Source {
        source: Source,
        store: DataStore,
        /// A cursor source's start, and what it read.
        cursor: Option<Arc<CursorRead>>,
    },
    Transform {
        sql: String,
    },
}

/// What a persist unit writes, and where.
#[derive(Debug, Clone)]
pub struct PersistWork {
    pub output: Output,
    pub load: Load,
    pub store: DataStore,
}

/// A unit, ready to run: its nodes (inputs first) and, for a persist unit, its output.
#[derive(Debug, Clone)]
pub struct UnitWork {
    /// The terminal node's name.
    pub name: String,
    pub kind: UnitKind,
    /// The nodes computed here, every node after its inputs; for a materialize or discard unit
    /// the last one is the terminal.
    pub nodes: Vec<(String, NodeWork)>,
    pub persist: Option<PersistWork>,
    /// For a check unit, its check.
    pub check: Option<Check>,
}

/// What a unit finished with.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The rows of the terminal: materialized, staged or discarded (a check's failing rows).
    pub rows: u64,
    /// A check unit's verdict.
    pub check: Option<CheckOutcome>,
}

impl Finished {
    fn rows(rows: u64) -> Self {
        Finished { rows, check: None }
    }
}

impl UnitWork {
    /// Every DAG node the unit reports on: its nodes, then the persist node if any.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes
            .iter()
            .map(|(n, _)| n.as_str())
            .chain((self.persist.is_some() || self.check.is_some()).then_some(self.name.as_str()))
    }

    /// The node a unit's failure as a whole (a timeout) is blamed on: the query it runs — the
    /// output's node for a persist unit that computes it, else the terminal.
    pub fn main_node(&self) -> &str {
        match (&self.persist, self.nodes.last()) {
            (Some(_), Some((name, _))) => name,
            _ => &self.name,
        }
    }

    /// The cursor sources read in this unit.
    pub fn cursors(&self) -> impl Iterator<Item = &Arc<CursorRead>> {
        self.nodes.iter().filter_map(|(_, w)| match w {
            NodeWork::Source { cursor, .. } => cursor.as_ref(),
            NodeWork::Transform { .. } => None,
        })
    }

    /// The SQL of node `name`, if it is a transform.
    pub fn sql_of(&self, name: &str) -> Option<&str> {
        self.nodes.iter().find_map(|(n, w)| match w {
            NodeWork::Transform { sql } if n == name => Some(sql.as_str()),
            _ => None,
        })
    }
}

/// Why a unit failed: the node to blame, and what failed there (a [`Failure`] at a node:
/// whether another attempt may succeed, whether the memory limit was reached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    pub node: String,
    pub message: String,
    pub transient: bool,
    /// The flow's memory limit was reached.
    pub resources: bool,
}

impl UnitError {
    /// A failure at `node` that another attempt would not mend.
    pub fn permanent(node: impl Into<String>, message: impl Into<String>) -> Self {
        UnitError {
            node: node.into(),
            message: message.into(),
            transient: false,
            resources: false,
        }
    }

    fn at(node: &str, failure: Failure) -> Self {
        UnitError {
            node: node.to_string(),
            message: failure.message,
            transient: failure.transient,
            resources: failure.resources,
        }
    }

    fn connector(node: &str, e: ConnectorError) -> Self {
        UnitError {
            node: node.to_string(),
            transient: e.is_transient(),
            message: e.message,
            resources: false,
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

/// How a unit is planned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Strategy {
    /// Plan joins as sort-merge joins, which spill, instead of hash joins, which must hold
    /// their build side in memory (the retry after a hash join ran out of memory).
    pub sort_merge_joins: bool,
}

/// Runs `work`, counting each node's rows in `trackers` (one per name of
/// `work.node_names()`) and calling `started` for each node as it starts (once the nodes it
/// reads are planned: a node whose input fails to plan never starts). Returns the rows of the
/// terminal: materialized, staged or discarded; a check's verdict.
pub async fn run(
    work: &UnitWork,
    session: &FlowSession,
    io: &IoContext,
    trackers: &HashMap<String, Arc<NodeTracker>>,
    strategy: Strategy,
    started: &(dyn Fn(&str) + Send + Sync),
) -> Result<Finished, UnitError> {
    let ctx = session
        .unit_context()
        .map_err(|e| internal(&work.name, e.to_string()))?;
    if strategy.sort_merge_joins {
        let state = ctx.state_ref();
        let mut state = state.write();
        state.config_mut().options_mut().optimizer.prefer_hash_join = false;
    }
    let io = IoContext {
        session: ctx.clone(),
        ..io.clone()
    };
    let tracker = |name: &str| {
        trackers
            .get(name)
            .cloned()
            .ok_or_else(|| internal(name, format!("no tracker for node {name}")))
    };
    for (name, node) in &work.nodes {
        started(name);
        register(&ctx, name, node, &io, tracker(name)?).await?;
    }
    let result = match work.kind {
        UnitKind::Materialize | UnitKind::Discard => {
            let terminal = &work.name;
            let df = ctx
                .table(terminal.as_str())
                .await
                .map_err(|e| internal(terminal, error::clean_message(&e)))?;
            // Optimized once here, so the checkpoint can record what the plan proves.
            let (state, logical) = df.into_parts();
            let logical = state
                .optimize(&logical)
                .map_err(|e| blame(work, trackers, terminal, &e))?;
            let unique = eager_aggregate::unique_sets(&logical);
            let plan = state
                .query_planner()
                .create_physical_plan(&logical, &state)
                .await
                .map_err(|e| blame(work, trackers, terminal, &e))?;
            let partitions =
                execute_partitions(&plan, &ctx).map_err(|e| blame(work, trackers, terminal, &e))?;
            if work.kind == UnitKind::Materialize {
                let rows = checkpoint::write(&session.work_dir, terminal, partitions, unique)
                    .await
                    .map_err(|e| blame(work, trackers, terminal, &e))?;
                let table = checkpoint::table(session.state(), &session.work_dir, terminal)
                    .await
                    .map_err(|e| internal(terminal, error::clean_message(&e)))?;
                session.add_table(terminal, table);
                Ok(Finished::rows(rows))
            } else {
                drain(partitions)
                    .await
                    .map(Finished::rows)
                    .map_err(|e| blame(work, trackers, terminal, &e))
            }
        }
        UnitKind::Check => {
            let check = work
                .check
                .as_ref()
                .ok_or_else(|| internal(&work.name, "a check unit without its check".into()))?;
            started(&work.name);
            match check::evaluate(&ctx, check).await {
                Ok(outcome) => {
                    if let Some(t) = trackers.get(&work.name) {
                        t.add(outcome.failing_rows);
                    }
                    Ok(Finished {
                        rows: outcome.failing_rows,
                        check: Some(outcome),
                    })
                }
                Err(e) => match blamed_failure(trackers, work) {
                    Some(upstream) => Err(upstream),
                    None => {
                        let failure = Failure::of(&e, None);
                        if failure.transient || failure.resources {
                            Err(UnitError::at(&work.name, failure))
                        } else {
                            Ok(Finished {
                                rows: 0,
                                check: Some(CheckOutcome {
                                    failing_rows: 0,
                                    sample: vec![],
                                    problem: Some(format!("check {}: {}", check.name, failure.message)),
                                }),
                            })
                        }
                    }
                },
            }
        }
        UnitKind::Persist => {
            let persist = work
                .persist
                .as_ref()
                .ok_or_else(|| internal(&work.name, "a persist unit without its output".into()))?;
            let node = persist.output.node.as_str();
            let input = ctx
                .table(node)
                .await
                .map_err(|e| internal(node, error::clean_message(&e)))?;
            if !persist.output.columns.is_empty() {
                let differences = contract::differences(&persist.output.columns, input.schema().as_arrow());
                if !differences.is_empty() {
                    return Err(internal(
                        &work.name,
                        format!(
                            "the result of {node} does not match the output's declared columns: {}",
                            differences.join("; ")
                        ),
                    ));
                }
            }
            let (state, plan) = input.into_parts();
            let persist_tracker = tracker(&work.name)?;
            persist_tracker.forbid_nulls(
                persist
                    .output
                    .columns
                    .iter()
                    .filter(|c| !c.nullable)
                    .map(|c| c.name.clone())
                    .collect(),
            );
            if !work.nodes.iter().any(|(n, _)| n == node) {
                // It reads a checkpoint: its size is known.
                let (dir, name) = (session.work_dir.clone(), node.to_string());
                let rows = tokio::task::spawn_blocking(move || checkpoint::rows(&dir, &name))
                    .await
                    .ok()
                    .flatten();
                persist_tracker.set_estimate(rows);
            }
            let input = DataFrame::new(state, boundary::wrap(plan, persist_tracker));
            started(&work.name);
            let sink = connectors::sink_for(&persist.store, &io.pools)
                .map_err(|e| UnitError::connector(&work.name, e))?;
            let no_progress: RowsCallback = Arc::new(|_, _| {});
            let mut key_problem = None;
            let staged = if persist.load.mode == WriteMode::Merge {
                // The keys are checked on the way to the sink (one pass over the result).
                let stream = input
                    .execute_stream()
                    .await
                    .map_err(|e| blame(work, trackers, &work.name, &e))?;
                let (stream, problem) = merge_key::checked(stream, &persist.load.unique_key, node)
                    .map_err(|e| internal(&work.name, e.to_string()))?;
                key_problem = Some(problem);
                sink.stage(&persist.load, stream, &io, no_progress).await
            } else {
                sink.stage_frame(&persist.load, input, &io, no_progress).await
            };
            let key_problem = key_problem.and_then(|p| p.lock().ok().and_then(|p| p.clone()));
            if let Some(message) = key_problem {
                return Err(internal(&work.name, message));
            }
            match staged {
                Ok(rows) => {
                    let (dir, name) = (session.work_dir.clone(), work.name.clone());
                    tokio::task::spawn_blocking(move || checkpoint::mark_staged(&dir, &name, rows))
                        .await
                        .map_err(|e| internal(&work.name, e.to_string()))?
                        .map_err(|e| internal(&work.name, format!("recording the staged output: {e}")))?;
                    Ok(Finished::rows(rows))
                }
                Err(e) => {
                    Err(blamed_failure(trackers, work).unwrap_or_else(|| UnitError::connector(&work.name, e)))
                }
            }
        }
    };
    result
}

/// Registers one node of the unit in `ctx` under its name.
async fn register(
    ctx: &SessionContext,
    name: &str,
    node: &NodeWork,
    io: &IoContext,
    tracker: Arc<NodeTracker>,
) -> Result<(), UnitError> {
    let table: Arc<dyn datafusion::catalog::TableProvider> = match node {
        NodeWork::Source {
            source,
            store,
            cursor,
        } => source_table::open_table(source, store, io, tracker, cursor.clone())
            .await
            .map_err(|e| UnitError::connector(name, e))?,
        NodeWork::Transform { sql } => {
            let df = ctx
                .sql_with_options(sql, query_only())
                .await
                .map_err(|e| UnitError::at(name, Failure::of(&e, Some(sql))))?;
            let plan = boundary::wrap(df.into_unoptimized_plan(), tracker);
            Arc::new(ViewTable::new(plan, Some(sql.clone())))
        }
    };
    let _ = ctx.deregister_table(name);
    ctx.register_table(name, table)
        .map_err(|e| internal(name, error::clean_message(&e)))?;
    Ok(())
}

/// Starts every partition of `plan`.
fn execute_partitions(
    plan: &Arc<dyn ExecutionPlan>,
    ctx: &SessionContext,
) -> Result<Vec<datafusion::execution::SendableRecordBatchStream>, DataFusionError> {
    let task = ctx.task_ctx();
    (0..plan.output_partitioning().partition_count())
        .map(|i| plan.execute(i, Arc::clone(&task)))
        .collect()
}

/// Runs every partition to its end, keeping nothing; returns the rows.
async fn drain(
    partitions: Vec<datafusion::execution::SendableRecordBatchStream>,
) -> Result<u64, DataFusionError> {
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in partitions {
        tasks.spawn(async move {
            let mut rows = 0u64;
            while let Some(batch) = stream.next().await {
                rows += batch?.num_rows() as u64;
            }
            Ok::<_, DataFusionError>(rows)
        });
    }
    let mut rows = 0;
    while let Some(done) = tasks.join_next().await {
        rows += done.map_err(|e| DataFusionError::External(Box::new(e)))??;
    }
    Ok(rows)
}

/// The failure a boundary recorded, if one did: the innermost node whose tracker has one.
fn blamed_failure(trackers: &HashMap<String, Arc<NodeTracker>>, work: &UnitWork) -> Option<UnitError> {
    // Inputs first: an error raised in an input passes through its readers' boundaries
    // untouched, so the first node in the unit's order with a failure raised it.
    work.node_names()
        .find_map(|name| trackers.get(name)?.failure().map(|f| UnitError::at(name, f)))
}

/// Blames `e` on the node a boundary recorded it in, or else on `fallback`.
fn blame(
    work: &UnitWork,
    trackers: &HashMap<String, Arc<NodeTracker>>,
    fallback: &str,
    e: &DataFusionError,
) -> UnitError {
    blamed_failure(trackers, work)
        .unwrap_or_else(|| UnitError::at(fallback, Failure::of(e, work.sql_of(fallback))))
}

fn internal(node: &str, message: String) -> UnitError {
    UnitError::permanent(node, message)
}
