//! FlowActor: one per running flow. It owns the flow's run state (a `Scheduler` over the flow's
//! units, see `domain::plan`), starts a TaskActor for each unit whose inputs are done (up to
//! `max_parallel_tasks`), reports every DAG node of a unit (inlined ones too) and every
//! check's verdict (a failing `error` check fails its unit, so the flow publishes nothing),
//! marks what depends on a failed node SKIPPED, and ends the flow: COMPLETED, FAILED (every
//! error listed) or CANCELLED. The final state is written by the Persister before the supervisor
//! hears of it. If the actor dies without ending its flow (a panic in its own logic), its drop
//! guard reports a crash so the supervisor can restart the flow. Which phase the run is in,
//! what a cancel, suspend, timeout, failure or crash does there, and the final state are
//! decided by its `flow_state::RunState`; this actor does the messaging and IO.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio_util::sync::CancellationToken;

use super::flow_state::{CancelDecision, End, Phase, RunState, StopReason};
use super::leases::Leases;
use super::messages::{
    Cancel, CrashCause, FlowCrashed, FlowEnded, FlowPlan, Record, SharedSession, Suspend, TaskDone,
    TaskOutcome, Transition, Untrack,
};
use super::persister::Persister;
use super::supervisor::FlowSupervisor;
use super::task::{TaskActor, TaskSpec};
use crate::domain::checks::{failure_line, Severity};
use crate::domain::dag::{NodeKind, Scheduler};
use crate::domain::flow::{CheckState, FlowEvent, FlowState, Level};
use crate::domain::plan::{Unit, UnitKind};
use crate::domain::store::DataStore;
use crate::engine::check::CheckOutcome;
use crate::engine::cursor_read::CursorRead;
use crate::engine::unit::{NodeWork, PersistWork, UnitError, UnitWork};
use crate::engine::{checkpoint, publish, Engine, EngineError};

/// How long a cancelled flow waits for its running tasks to stop before ending anyway.
const CANCEL_GRACE: Duration = Duration::from_millis(600);

pub struct FlowActor {
    plan: Arc<FlowPlan>,
    /// Nodes completed by an earlier run (valid checkpoints, staged outputs); not run again.
    done: HashSet<String>,
    /// Whether `done` comes from an earlier run of this flow (a restart), which the log says;
    /// a retry's first run reuses another flow's checkpoints, which its log already says.
    restarted: bool,
    /// Which units are pending, running or done; indexes are the units' (`Scheduler::name`
    /// gives a unit's terminal node).
    scheduler: Scheduler,
    /// The phase of the run, and how it ends (see `flow_state`).
    run: RunState,
    engine: Arc<Engine>,
    session: Option<SharedSession>,
    cancel: CancellationToken,
    persister: Addr<Persister>,
    supervisor: Addr<FlowSupervisor>,
    /// Running tasks by unit index.
    tasks: HashMap<usize, Addr<TaskActor>>,
    /// Several instances: the lease this flow is run under, confirmed before it publishes.
    leases: Option<Arc<Leases>>,
}

impl FlowActor {
    pub fn new(
        plan: Arc<FlowPlan>,
        done: HashSet<String>,
        restarted: bool,
        engine: Arc<Engine>,
        persister: Addr<Persister>,
        supervisor: Addr<FlowSupervisor>,
    ) -> Self {
        let scheduler = Scheduler::new(
            &plan.run.as_dag(),
            plan.spec.options.max_parallel_tasks as usize,
            &done,
        );
        FlowActor {
            plan,
            done,
            restarted,
            scheduler,
            run: RunState::new(),
            engine,
            session: None,
            cancel: CancellationToken::new(),
            persister,
            supervisor,
            tasks: HashMap::new(),
            leases: None,
        }
    }

    /// Runs the flow under this instance's lease (several instances): it publishes (or
    /// discards what it staged) only while it still holds the flow.
    pub fn leased(mut self, leases: Option<Arc<Leases>>) -> Self {
        self.leases = leases;
        self
    }

    fn flow_id(&self) -> i64 {
        self.plan.flow_id
    }

    fn record(&self, event: FlowEvent) {
        self.persister.do_send(Record {
            flow_id: self.flow_id(),
            event,
        });
    }

    fn log(&self, level: Level, message: String) {
        self.record(FlowEvent::Log {
            level,
            task: None,
            message,
        });
    }

    /// The work of unit `name`.
    fn work_for(&self, name: &str) -> Result<UnitWork, String> {
        let unit = self
            .plan
            .run
            .unit(name)
            .ok_or_else(|| format!("unit {name} is not in the plan"))?;
        let spec = &self.plan.spec;
        let computed: Vec<&String> = match unit.kind {
            UnitKind::Persist | UnitKind::Check => unit.inlined.iter().collect(),
            _ => unit.inlined.iter().chain(std::iter::once(&unit.name)).collect(),
        };
        let mut nodes = Vec::with_capacity(computed.len());
        for node in computed {
            let kind = self
                .plan
                .dag
                .node(node)
                .map(|n| n.kind)
                .ok_or_else(|| format!("node {node} is not in the DAG"))?;
            let work = match kind {
                NodeKind::Ingest => {
                    let source = spec
                        .sources
                        .iter()
                        .find(|s| &s.name == node)
                        .ok_or_else(|| format!("source {node} not found"))?;
                    let cursor = source.incremental.as_ref().map(|inc| {
                        let start = self.plan.cursor_starts.get(node).cloned().unwrap_or_default();
                        CursorRead::new(node, inc.cursor.as_deref().unwrap_or(""), start)
                    });
                    NodeWork::Source {
                        source: source.clone(),
                        store: self.store(source.store_id)?,
                        cursor,
                    }
                }
                NodeKind::Transform => {
                    let t = spec
                        .transforms
                        .iter()
                        .find(|t| &t.name == node)
                        .ok_or_else(|| format!("transform {node} not found"))?;
                    NodeWork::Transform { sql: t.sql.clone() }
                }
                NodeKind::Persist | NodeKind::Check => {
                    return Err(format!("{} node {node} cannot be inlined", kind.as_str()))
                }
            };
            nodes.push((node.clone(), work));
        }
        let persist = match unit.kind {
            UnitKind::Persist => {
                let index = spec
                    .outputs
                    .iter()
                    .position(|o| o.node_name() == unit.name)
                    .ok_or("output not found")?;
                let load =
                    publish::loads(self.engine.instance(), self.flow_id(), &spec.outputs).swap_remove(index);
                Some(PersistWork {
                    output: spec.outputs[index].clone(),
                    load,
                    store: self.store(spec.target_store_id)?,
                })
            }
            _ => None,
        };
        let check = match unit.kind {
            UnitKind::Check => Some(
                spec.checks
                    .iter()
                    .find(|c| c.name == unit.name)
                    .cloned()
                    .ok_or_else(|| format!("check {} not found", unit.name))?,
            ),
            _ => None,
        };
        Ok(UnitWork {
            name: unit.name.clone(),
            kind: unit.kind,
            nodes,
            persist,
            check,
        })
    }

    /// The unit behind scheduler index `index`.
    fn unit(&self, index: usize) -> Option<&Unit> {
        self.plan.run.unit(self.scheduler.name(index))
    }

    /// The DAG nodes of unit `index`, inputs first.
    fn unit_nodes(&self, index: usize) -> Vec<String> {
        self.unit(index)
            .map(|u| u.nodes().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Reports that unit `index` failed in node `error.node`: that node FAILED, the nodes of
    /// the unit that read it SKIPPED, the others stopped; then every unit downstream SKIPPED.
    fn unit_failed(&mut self, index: usize, error: UnitError) {
        let failed = error.node.clone();
        let nodes = self.unit_nodes(index);
        let downstream = self.downstream_of(&failed);
        self.record(FlowEvent::TaskFailed {
            task: failed.clone(),
            error: error.message,
            retry_in: None,
        });
        for node in nodes.iter().filter(|n| **n != failed) {
            if downstream.contains(node) {
                self.record(FlowEvent::TaskSkipped {
                    task: node.clone(),
                    because: format!("{failed} failed"),
                });
            } else {
                self.record(FlowEvent::Log {
                    level: Level::Warn,
                    task: Some(node.clone()),
                    message: format!("stopped: {failed} failed"),
                });
                self.record(FlowEvent::TaskCancelled { task: node.clone() });
            }
        }
        for skipped in self.scheduler.fail(index) {
            for node in self.unit_nodes(skipped) {
                self.record(FlowEvent::TaskSkipped {
                    task: node,
                    because: format!("{failed} failed"),
                });
            }
        }
    }

    /// Reports the verdict of check unit `index`: its inlined nodes COMPLETED, the check PASSED,
    /// WARNED (a `warn` check that failed: the unit completes) or FAILED (an `error` check
    /// that failed: the unit fails, so the flow fails and publishes nothing). Returns whether
    /// the unit failed.
    fn check_done(
        &mut self,
        index: usize,
        rows: Vec<(String, u64)>,
        elapsed: Duration,
        outcome: CheckOutcome,
    ) -> bool {
        let name = self.scheduler.name(index).to_string();
        let Some(check) = self.plan.spec.checks.iter().find(|c| c.name == name).cloned() else {
            self.scheduler.complete(index);
            return false;
        };
        for (task, rows) in rows.iter().filter(|(task, _)| *task != name) {
            self.record(FlowEvent::TaskCompleted {
                task: task.clone(),
                rows: *rows,
                elapsed,
            });
        }
        let passed = outcome.passed();
        let message = match (&outcome.problem, passed) {
            (Some(problem), _) => Some(problem.clone()),
            (None, true) => None,
            (None, false) => Some(failure_line(&check, outcome.failing_rows, &outcome.sample)),
        };
        let failing_rows = outcome.problem.is_none().then_some(outcome.failing_rows);
        let state = match (passed, check.severity) {
            (true, _) => CheckState::Passed,
            (false, Severity::Warn) => CheckState::Warned,
            (false, Severity::Error) => CheckState::Failed,
        };
        self.record(FlowEvent::CheckFinished {
            name: name.clone(),
            state,
            failing_rows,
            sample: outcome.sample,
            message: message.clone(),
        });
        if state == CheckState::Failed {
            self.record(FlowEvent::TaskFailed {
                task: name.clone(),
                error: message.unwrap_or_else(|| format!("check {name} failed")),
                retry_in: None,
            });
            for skipped in self.scheduler.fail(index) {
                for node in self.unit_nodes(skipped) {
                    self.record(FlowEvent::TaskSkipped {
                        task: node,
                        because: format!("{name} failed"),
                    });
                }
            }
            return true;
        }
        self.scheduler.complete(index);
        self.record(FlowEvent::TaskCompleted {
            task: name,
            rows: failing_rows.unwrap_or(0),
            elapsed,
        });
        false
    }

    /// Every DAG node that reads `node`, directly or not.
    fn downstream_of(&self, node: &str) -> HashSet<String> {
        let mut out = HashSet::new();
        let mut stack = vec![node.to_string()];
        while let Some(n) = stack.pop() {
            for d in self.plan.dag.dependents(&n) {
                if out.insert(d.name.clone()) {
                    stack.push(d.name.clone());
                }
            }
        }
        out
    }
    /// Data store `id` of the plan.
    fn store(&self, id: i64) -> Result<DataStore, String> {
        self.plan
            .stores
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("data store {id} no longer exists"))
    }

    /// Starts every node that may start now.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if !self.run.is_running() {
            return;
        }
        let Some(session) = self.session.clone() else {
            return;
        };
        for index in self.scheduler.start_ready() {
            let name = self.scheduler.name(index).to_string();
            match self.work_for(&name) {
                Ok(work) => {
                    let spec = TaskSpec {
                        flow_id: self.flow_id(),
                        index,
                        work,
                        max_attempts: self.plan.spec.options.max_attempts,
                        timeout: Duration::from_secs(self.plan.spec.options.task_timeout_s),
                        memory_limit_mb: self.plan.spec.options.memory_limit_mb,
                        flow_input: self.plan.spec.name.clone(),
                    };
                    let task = TaskActor::new(
                        spec,
                        self.engine.clone(),
                        session.clone(),
                        self.cancel.clone(),
                        ctx.address(),
                        self.persister.clone(),
                    );
                    self.tasks.insert(index, task.start());
                }
                Err(message) => {
                    ctx.notify(TaskDone {
                        index,
                        outcome: TaskOutcome::Failed(UnitError::permanent(name, message)),
                    });
                }
            }
        }
        self.maybe_end(ctx);
    }

    /// Once the run state is stopping for `reason` (`RunState::cancel`, `suspend`,
    /// `time_out`, `unit_failed`): cancels running work and (unless the
    /// flow is suspended) pending nodes, and ends the flow once its tasks have stopped.
    fn cancel_work(&mut self, reason: StopReason, ctx: &mut Context<Self>) {
        self.cancel.cancel();
        if reason != StopReason::Suspended {
            for index in self.scheduler.cancel_pending() {
                for task in self.unit_nodes(index) {
                    self.record(FlowEvent::TaskCancelled { task });
                }
            }
        }
        // Tasks stop within milliseconds; if one does not, end without it (its work is
        // cancelled and its late report is ignored).
        ctx.run_later(CANCEL_GRACE, |act, ctx| {
            if act.run.grace_over() {
                act.tasks.clear();
                act.end(ctx);
            }
        });
        self.maybe_end(ctx);
    }

    fn maybe_end(&mut self, ctx: &mut Context<Self>) {
        if self
            .run
            .should_end(self.tasks.is_empty(), self.scheduler.is_finished())
        {
            self.end(ctx);
        }
    }

    /// Ends the flow: publishes its staged outputs when every node succeeded, or discards them;
    /// then writes the final state and tells the supervisor. When suspending for shutdown it
    /// keeps everything for the next start.
    fn end(&mut self, ctx: &mut Context<Self>) {
        let Some(end) = self.run.end(self.scheduler.all_completed()) else {
            return;
        };
        self.cancel.cancel();
        let flow_id = self.flow_id();
        let End::Final(state) = end else {
            self.run.reported();
            tracing::info!(flow_id, "flow suspended for shutdown");
            self.log(
                Level::Warn,
                "suspended for shutdown; it resumes at the next start".into(),
            );
            self.supervisor.do_send(FlowEnded {
                flow_id,
                state: FlowState::Running,
            });
            ctx.stop();
            return;
        };
        let Some(leases) = self.leases.clone() else {
            return self.settle_outputs(state, ctx);
        };
        // Another instance that took the flow over publishes it (or discards what it staged):
        // this one must not, even if it only now wakes up from a pause.
        ctx.wait(
            async move { leases.confirm(flow_id).await }.into_actor(self).map(
                move |held, act, ctx| match held {
                    Ok(true) => act.settle_outputs(state, ctx),
                    Ok(false) => act.abandon("another instance took it over", ctx),
                    Err(e) => act.abandon(&format!("its lease could not be confirmed ({e})"), ctx),
                },
            ),
        );
    }

    /// Leaves the flow to whichever instance holds its lease: nothing published, discarded,
    /// written or removed here.
    fn abandon(&mut self, why: &str, ctx: &mut Context<Self>) {
        let flow_id = self.flow_id();
        tracing::warn!(
            flow_id,
            why,
            "this instance no longer holds the flow's lease; leaving it unpublished"
        );
        self.run.reported();
        self.persister.do_send(Untrack { flow_id });
        self.supervisor.do_send(FlowEnded {
            flow_id,
            state: FlowState::Running,
        });
        ctx.stop();
    }

    /// Publishes the staged outputs (the flow completed) or discards them, then writes the end.
    fn settle_outputs(&mut self, state: FlowState, ctx: &mut Context<Self>) {
        let flow_id = self.flow_id();
        let store = self.plan.stores.get(&self.plan.spec.target_store_id).cloned();
        let loads = publish::loads(self.engine.instance(), flow_id, &self.plan.spec.outputs);
        let count = loads.len();
        let engine = self.engine.clone();
        #[cfg(all(feature = "fault-injection", debug_assertions))]
        let fault = (self.plan.spec.name.clone(), self.engine.work_dir(flow_id));
        let step = self.engine.handle().spawn(async move {
            let store = store.ok_or_else(|| "the target data store no longer exists".to_string())?;
            let started = std::time::Instant::now();
            let mut notes = Vec::new();
            if state == FlowState::Completed {
                match engine.publish(&store, &loads).await {
                    Ok(said) => {
                        #[cfg(all(feature = "fault-injection", debug_assertions))]
                        if crate::engine::faults::abort_after_publish(
                            &fault.0,
                            fault.1.parent().unwrap_or(&fault.1),
                        ) {
                            std::process::abort();
                        }
                        notes = said
                    }
                    Err(e) => {
                        let _ = engine.discard(&store, &loads).await;
                        return Err(e.to_string());
                    }
                }
            } else {
                engine.discard(&store, &loads).await.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>((store.name, started.elapsed(), notes))
        });
        ctx.wait(
            async move {
                step.await
                    .map_err(|e| format!("the publish step crashed: {e}"))
                    .and_then(|r| r)
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                let ok = result.is_ok();
                match (state, result) {
                    (FlowState::Completed, Ok((store, elapsed, notes))) => {
                        for note in notes {
                            act.log(Level::Info, note);
                        }
                        let message = format!(
                            "published {count} output(s) to {store} in {:.2} s",
                            elapsed.as_secs_f64()
                        );
                        act.log(Level::Info, message);
                    }
                    (FlowState::Completed, Err(e)) => {
                        let message = format!("publishing the outputs failed: {e}");
                        act.record(FlowEvent::FlowError { message });
                    }
                    (_, Err(e)) => {
                        act.log(Level::Warn, format!("could not remove the staged outputs: {e}"));
                    }
                    (_, Ok(_)) => {}
                }
                let state = act.run.settle(state, ok);
                act.write_end(state, ctx);
            }),
        );
    }

    /// Writes the final state, removes the work directory, tells the supervisor, stops.
    fn write_end(&mut self, state: FlowState, ctx: &mut Context<Self>) {
        let flow_id = self.flow_id();
        let persister = self.persister.clone();
        let work_dir = self.engine.work_dir(flow_id);
        ctx.wait(
            async move {
                // A flow that did not complete keeps its checkpoints for a retry (`POST /flows
                // {"retry_of"}`; the supervisor removes them after `engine.retry_retention_h` or
                // once a later flow of the input completes), and nothing else: its spill files
                // and staged markers go before its end is written, so whoever sees the end sees
                // the tidied directory (a crash in between resumes from the same checkpoints).
                if state != FlowState::Completed {
                    let dir = work_dir.clone();
                    let kept = tokio::task::spawn_blocking(move || checkpoint::keep_only_checkpoints(&dir)).await;
                    if let Ok(Err(e)) = kept {
                        tracing::warn!(flow_id, error = %e, "could not tidy the work directory of a flow that ended");
                    }
                }
                let written = persister
                    .send(Transition { flow_id, state })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                // A completed flow's directory goes once the end is durable (not before: a
                // crash in between must still find the checkpoints).
                if state == FlowState::Completed {
                    let _ = tokio::fs::remove_dir_all(&work_dir).await;
                }
                written
            }
            .into_actor(self)
            .map(move |written, act, ctx| {
                match written {
                    Ok(()) => {
                        act.run.reported();
                        tracing::info!(flow_id, state = %state, "flow ended");
                        act.supervisor.do_send(FlowEnded { flow_id, state });
                    }
                    Err(e) => {
                        act.run.reported();
                        act.supervisor.do_send(FlowCrashed {
                            flow_id,
                            cause: CrashCause::Internal(format!("writing the final state failed: {e}")),
                        });
                    }
                }
                ctx.stop();
            }),
        );
    }
}

impl Actor for FlowActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let flow_id = self.flow_id();
        let memory = self.plan.spec.options.memory_limit_mb;
        if let Some(limit) = self.plan.spec.options.flow_timeout_s {
            ctx.run_later(Duration::from_secs(limit), move |act, ctx| {
                if act.run.time_out() {
                    act.record(FlowEvent::FlowError {
                        message: format!("timed out after {limit} s (options.flow_timeout_s)"),
                    });
                    act.cancel_work(StopReason::Failed, ctx);
                }
            });
        }
        // The flow's session, with the checkpoints of an earlier run as tables again (on the
        // engine runtime: it touches files); then the flow is RUNNING.
        let restore: Vec<String> = self
            .plan
            .run
            .units
            .iter()
            .filter(|u| u.kind == UnitKind::Materialize && self.done.contains(&u.name))
            .map(|u| u.name.clone())
            .collect();
        let resumed = self.restarted && !self.done.is_empty();
        let engine = self.engine.clone();
        let engine_handle = self.engine.handle().clone();
        // Enqueued now, before anything asynchronous, so flows become RUNNING in the order the
        // supervisor started them.
        let running = self.persister.send(Transition {
            flow_id,
            state: FlowState::Running,
        });
        ctx.wait(
            async move {
                let prepared = engine_handle
                    .spawn(async move {
                        let session = engine.session(flow_id, memory).await?;
                        for node in &restore {
                            session.restore(node).await?;
                        }
                        Ok::<_, EngineError>(Arc::new(session))
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                let running = running.await.unwrap_or_else(|e| Err(e.to_string()));
                (prepared, running)
            }
            .into_actor(self)
            .map(move |(prepared, running), act, ctx| {
                if act.run.phase() != Phase::Starting {
                    return;
                }
                match prepared {
                    Ok(session) => act.session = Some(session),
                    Err(e) => {
                        act.run.reported();
                        act.supervisor.do_send(FlowCrashed {
                            flow_id,
                            cause: CrashCause::Internal(e),
                        });
                        return ctx.stop();
                    }
                }
                if let Err(e) = running {
                    tracing::warn!(flow_id, error = %e, "could not write RUNNING");
                }
                act.run.session_ready();
                if resumed {
                    // In the DAG's order, so the line reads the same every time.
                    let kept: Vec<&str> = act
                        .plan
                        .dag
                        .order
                        .iter()
                        .filter(|n| act.done.contains(*n))
                        .map(String::as_str)
                        .collect();
                    act.log(
                        Level::Info,
                        format!(
                            "resuming: {} completed node(s) kept from the previous run: {}",
                            kept.len(),
                            kept.join(", ")
                        ),
                    );
                }
                act.schedule(ctx);
            }),
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.cancel.cancel();
    }
}

impl Drop for FlowActor {
    fn drop(&mut self) {
        self.cancel.cancel();
        if self.run.must_report_crash() {
            let cause = if std::thread::panicking() {
                CrashCause::Panic("the flow's actor panicked".to_string())
            } else {
                CrashCause::Internal("the flow's actor stopped unexpectedly".to_string())
            };
            self.supervisor.do_send(FlowCrashed {
                flow_id: self.flow_id(),
                cause,
            });
        }
    }
}

impl Handler<TaskDone> for FlowActor {
    type Result = ();

    fn handle(&mut self, msg: TaskDone, ctx: &mut Self::Context) {
        if self.tasks.remove(&msg.index).is_none() && !matches!(msg.outcome, TaskOutcome::Failed(_)) {
            // A late report after the grace period: the flow has moved on.
            return;
        }
        let name = self.scheduler.name(msg.index).to_string();
        match msg.outcome {
            TaskOutcome::Completed {
                rows,
                elapsed,
                check: Some(outcome),
            } => {
                let failed = self.check_done(msg.index, rows, elapsed, outcome);
                if self.run.unit_failed(failed && self.plan.spec.options.fail_fast) {
                    self.log(
                        Level::Warn,
                        format!("fail_fast: stopping the flow because {name} failed"),
                    );
                    self.cancel_work(StopReason::Failed, ctx);
                }
            }
            TaskOutcome::Completed {
                rows,
                elapsed,
                check: None,
            } => {
                #[cfg(all(feature = "fault-injection", debug_assertions))]
                if let Some((node, _)) = rows
                    .iter()
                    .find(|(node, _)| crate::engine::faults::actor_should_panic(node))
                {
                    panic!("injected panic in the flow actor after {node} completed");
                }
                self.scheduler.complete(msg.index);
                for (task, rows) in rows {
                    self.record(FlowEvent::TaskCompleted { task, rows, elapsed });
                }
            }
            TaskOutcome::Failed(e) => {
                let failed = e.node.clone();
                self.unit_failed(msg.index, e);
                if self.run.unit_failed(self.plan.spec.options.fail_fast) {
                    self.log(
                        Level::Warn,
                        format!("fail_fast: stopping the flow because {failed} failed"),
                    );
                    self.cancel_work(StopReason::Failed, ctx);
                }
            }
            TaskOutcome::Cancelled => {
                self.scheduler.cancel(msg.index);
                for task in self.unit_nodes(msg.index) {
                    self.record(FlowEvent::TaskCancelled { task });
                }
            }
            TaskOutcome::Panicked(message) => {
                // A crash, not a node failure: the supervisor restarts the flow from its
                // checkpoints.
                self.cancel.cancel();
                self.run.crashed();
                self.supervisor.do_send(FlowCrashed {
                    flow_id: self.flow_id(),
                    cause: CrashCause::Panic(format!("task {name} panicked: {message}")),
                });
                return ctx.stop();
            }
        }
        self.schedule(ctx);
        self.maybe_end(ctx);
    }
}

impl Handler<Cancel> for FlowActor {
    type Result = Result<(), FlowState>;

    fn handle(&mut self, _: Cancel, ctx: &mut Self::Context) -> Self::Result {
        match self.run.cancel() {
            CancelDecision::Stop => {
                self.log(Level::Warn, "cancel requested".into());
                // Ends the flow at once when no task runs (a flow still starting has none).
                self.cancel_work(StopReason::Cancelled, ctx);
                Ok(())
            }
            CancelDecision::AlreadyCancelling => Ok(()),
            CancelDecision::Refused(state) => Err(state),
        }
    }
}

impl Handler<Suspend> for FlowActor {
    type Result = ();

    fn handle(&mut self, _: Suspend, ctx: &mut Self::Context) {
        if self.run.suspend() {
            self.cancel_work(StopReason::Suspended, ctx);
        }
    }
}
