//! TaskActor: one run of one unit of a flow (a terminal node and the nodes inlined into it, see
//! `domain::plan`). It runs the unit on the engine runtime (never on an arbiter), retries
//! transient failures with exponential backoff up to `max_attempts` (and once with sort-merge
//! joins when a hash join ran out of memory), enforces the task timeout, stops at once when
//! the flow's token is cancelled, and reports every node's progress to the Persister and the
//! outcome to its FlowActor. A panic in the work comes back as a `JoinError` and is reported as
//! a crash, never unwinding into the arbiter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio_util::sync::CancellationToken;

use super::flow::FlowActor;
use super::messages::{Record, RowsMoved, SharedSession, TaskDone, TaskOutcome};
use super::persister::Persister;
use crate::connectors::RowsCallback;
use crate::domain::flow::{FlowEvent, Level};
use crate::engine::boundary::NodeTracker;
use crate::engine::unit::{self, NodeWork, Strategy, UnitError, UnitWork};
use crate::engine::Engine;

/// How often a task reports its row count at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Delay before attempt `attempt + 1` after `attempt` failed: 0.5 s, 1 s, 2 s, ... capped at 30 s.
pub fn retry_delay(attempt: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(16));
    Duration::from_millis(ms.min(30_000))
}

pub struct TaskSpec {
    pub flow_id: i64,
    /// The unit's index in the flow's scheduler.
    pub index: usize,
    pub work: UnitWork,
    pub max_attempts: u32,
    pub timeout: Duration,
    /// The flow's memory limit (for messages).
    pub memory_limit_mb: u64,
    /// The flow input's name (for the metrics of rows read per source).
    pub flow_input: String,
}

pub struct TaskActor {
    spec: Option<TaskSpec>,
    engine: Arc<Engine>,
    session: SharedSession,
    cancel: CancellationToken,
    flow: Addr<FlowActor>,
    persister: Addr<Persister>,
}

impl TaskActor {
    pub fn new(
        spec: TaskSpec,
        engine: Arc<Engine>,
        session: SharedSession,
        cancel: CancellationToken,
        flow: Addr<FlowActor>,
        persister: Addr<Persister>,
    ) -> Self {
        TaskActor {
            spec: Some(spec),
            engine,
            session,
            cancel,
            flow,
            persister,
        }
    }
}

impl Actor for TaskActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(spec) = self.spec.take() else {
            return ctx.stop();
        };
        let index = spec.index;
        // `task` is the unit; `nodes` every node it computes (the nodes inlined into it too), so
        // an operator can find a node's lines whichever unit ran it.
        let nodes = spec.work.node_names().collect::<Vec<_>>().join(",");
        let span =
            tracing::info_span!("task", flow_id = spec.flow_id, task = %spec.work.name, nodes = %nodes);
        let work = run_attempts(
            spec,
            self.engine.clone(),
            self.session.clone(),
            self.cancel.clone(),
            self.persister.clone(),
        );
        let handle = self
            .engine
            .handle()
            .spawn(tracing::Instrument::instrument(work, span));
        let flow = self.flow.clone();
        ctx.wait(
            async move {
                match handle.await {
                    Ok(outcome) => outcome,
                    Err(e) if e.is_panic() => TaskOutcome::Panicked(panic_message(e.into_panic())),
                    Err(_) => TaskOutcome::Cancelled,
                }
            }
            .into_actor(self)
            .map(move |outcome, _, ctx| {
                flow.do_send(TaskDone { index, outcome });
                ctx.stop();
            }),
        );
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

/// The attempt loop, on the engine runtime.
async fn run_attempts(
    spec: TaskSpec,
    engine: Arc<Engine>,
    session: SharedSession,
    cancel: CancellationToken,
    persister: Addr<Persister>,
) -> TaskOutcome {
    let TaskSpec {
        flow_id,
        work,
        max_attempts,
        timeout,
        memory_limit_mb,
        flow_input,
        ..
    } = spec;
    let record = |event: FlowEvent| persister.do_send(Record { flow_id, event });
    let trackers: HashMap<String, Arc<NodeTracker>> = work
        .node_names()
        .map(|name| {
            let reporter = progress_reporter(flow_id, name.to_string(), persister.clone());
            let sql = work.sql_of(name).map(str::to_string);
            (name.to_string(), NodeTracker::new(name, sql, Some(reporter)))
        })
        .collect();
    let io = engine.io_context(&session, cancel.clone());
    let mut strategy = Strategy::default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        for tracker in trackers.values() {
            tracker.reset();
        }
        tracing::debug!(attempt, "task started");
        let started = Instant::now();
        let node_started = |task: &str| {
            persister.do_send(Record {
                flow_id,
                event: FlowEvent::TaskStarted {
                    task: task.to_string(),
                    attempt,
                },
            })
        };
        let run = async {
            // Alone after running out of memory (see `FlowSession::memory_gate`).
            let (_shared, _alone) = if strategy.sort_merge_joins {
                (None, Some(session.memory_gate.write().await))
            } else {
                (Some(session.memory_gate.read().await), None)
            };
            unit::run(&work, &session, &io, &trackers, strategy, &node_started).await
        };
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => return TaskOutcome::Cancelled,
            r = tokio::time::timeout(timeout, run) => r,
        };
        match result {
            Ok(Ok(finished)) => {
                // What the unit's cursor sources read: saved beside its checkpoint first (a
                // restarted flow reuses the unit only together with it), then shown.
                for cursor in work.cursors() {
                    let Some(mut entry) = cursor.entry() else { continue };
                    if entry.files.is_some() {
                        // A new_files source's rows: those its scans read.
                        entry.rows = trackers.get(&cursor.source).map_or(0, |t| t.rows());
                    }
                    let (dir, source, saved) =
                        (session.work_dir.clone(), cursor.source.clone(), entry.clone());
                    let written = tokio::task::spawn_blocking(move || {
                        crate::engine::cursor_read::save(&dir, &source, &saved)
                    })
                    .await;
                    if let Err(e) = written
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                    {
                        return TaskOutcome::Failed(UnitError::permanent(
                            cursor.source.clone(),
                            format!("saving what the cursor read: {e}"),
                        ));
                    }
                    record(FlowEvent::Cursor {
                        source: cursor.source.clone(),
                        entry,
                    });
                }
                let rows: Vec<(String, u64)> = work
                    .node_names()
                    .map(|n| (n.to_string(), trackers.get(n).map_or(0, |t| t.rows())))
                    .collect();
                report_rows(&persister, &work, &rows, &flow_input);
                return TaskOutcome::Completed {
                    rows,
                    elapsed: started.elapsed(),
                    check: finished.check,
                };
            }
            Ok(Err(e)) if e.resources && !strategy.sort_merge_joins => {
                // A hash join holds its whole build side in memory, sort-merge joins spill; and
                // units running beside it hold memory too: once more, alone, with sort-merge
                // joins.
                strategy.sort_merge_joins = true;
                tracing::warn!(attempt, error = %e.message, "out of memory, retrying alone with sort-merge joins");
                record(FlowEvent::Log {
                    level: Level::Warn,
                    task: Some(e.node.clone()),
                    message: format!(
                        "ran out of memory (options.memory_limit_mb = {memory_limit_mb}); trying again with the flow's memory to itself and sort-merge joins, which spill to disk"
                    ),
                });
                attempt -= 1;
            }
            Ok(Err(e)) if e.transient && attempt < max_attempts => {
                let delay = retry_delay(attempt);
                tracing::warn!(attempt, error = %e.message, "transient failure, retrying");
                record(FlowEvent::TaskFailed {
                    task: e.node.clone(),
                    error: e.message,
                    retry_in: Some(delay),
                });
                tokio::select! {
                    _ = cancel.cancelled() => return TaskOutcome::Cancelled,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Ok(Err(e)) => {
                let message = if e.transient && max_attempts > 1 {
                    format!("{} (gave up after {attempt} attempts)", e.message)
                } else {
                    e.message
                };
                return TaskOutcome::Failed(UnitError { message, ..e });
            }
            Err(_) => {
                return TaskOutcome::Failed(UnitError::permanent(
                    work.main_node(),
                    format!("timed out after {} s (options.task_timeout_s)", timeout.as_secs()),
                ));
            }
        }
    }
}

/// Tells the metrics how many rows a unit read from its sources and wrote into its output.
fn report_rows(persister: &Addr<Persister>, work: &UnitWork, rows: &[(String, u64)], flow_input: &str) {
    use crate::metrics::RowsDirection;
    let rows_of = |name: &str| rows.iter().find(|(n, _)| n == name).map_or(0, |(_, r)| *r);
    for (name, node) in &work.nodes {
        if let NodeWork::Source { store, .. } = node {
            persister.do_send(RowsMoved {
                engine: store.engine,
                direction: RowsDirection::Read,
                rows: rows_of(name),
                source: Some((flow_input.to_string(), name.clone())),
            });
        }
    }
    if let Some(p) = &work.persist {
        persister.do_send(RowsMoved {
            engine: p.store.engine,
            direction: RowsDirection::Written,
            rows: rows_of(&work.name),
            source: None,
        });
    }
}

/// A rows callback that reports to the Persister at most every `PROGRESS_EVERY`.
fn progress_reporter(flow_id: i64, task: String, persister: Addr<Persister>) -> RowsCallback {
    let last = std::sync::Mutex::new(None::<Instant>);
    Arc::new(move |rows, estimated_total| {
        let now = Instant::now();
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < PROGRESS_EVERY) {
            return;
        }
        *last = Some(now);
        persister.do_send(Record {
            flow_id,
            event: FlowEvent::TaskProgress {
                task: task.clone(),
                rows,
                estimated_total,
            },
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(retry_delay(1), Duration::from_millis(500));
        assert_eq!(retry_delay(2), Duration::from_millis(1000));
        assert_eq!(retry_delay(3), Duration::from_millis(2000));
        assert_eq!(retry_delay(30), Duration::from_secs(30));
    }
}
