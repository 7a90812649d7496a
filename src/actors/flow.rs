//! FlowActor: one per running flow. It owns the flow's DAG state (a `Scheduler`), starts a
//! TaskActor for each node whose dependencies are done (up to `max_parallel_tasks`), marks the
//! dependents of a failed node SKIPPED, and ends the flow: COMPLETED, FAILED (every error
//! listed) or CANCELLED. The final state is written by the Persister before the supervisor
//! hears of it. If the actor dies without ending its flow (a panic in its own logic), its drop
//! guard reports a crash so the supervisor can restart the flow.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio_util::sync::CancellationToken;

use super::messages::{
    Cancel, FlowCrashed, FlowEnded, FlowPlan, Record, SharedSession, Suspend, TaskDone, TaskOutcome,
    Transition,
};
use super::persister::Persister;
use super::supervisor::FlowSupervisor;
use super::task::{TaskActor, TaskSpec};
use crate::connectors::Load;
use crate::domain::dag::{NodeKind, Scheduler};
use crate::domain::flow::{FlowEvent, FlowState, Level};
use crate::domain::spec::Output;
use crate::domain::store::DataStore;
use crate::engine::node::{DirectLoad, NodeWork};
use crate::engine::{checkpoint, publish, Engine};

/// How long a cancelled flow waits for its running tasks to stop before ending anyway.
const CANCEL_GRACE: Duration = Duration::from_millis(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Setting up the session (registering checkpoints).
    Starting,
    Running,
    /// Stopping because of a cancel, a failure with `fail_fast`, a timeout or a suspend.
    Stopping(StopReason),
    /// The end is being written; nothing else happens.
    Ending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Cancelled,
    Failed,
    /// Graceful shutdown: leave the flow RUNNING for the next process to resume.
    Suspended,
}

pub struct FlowActor {
    plan: Arc<FlowPlan>,
    /// Nodes completed by an earlier run (valid checkpoints); not run again.
    done: HashSet<String>,
    scheduler: Scheduler,
    phase: Phase,
    engine: Arc<Engine>,
    session: Option<SharedSession>,
    cancel: CancellationToken,
    persister: Addr<Persister>,
    supervisor: Addr<FlowSupervisor>,
    /// Set once the supervisor has been told how the flow ended (or that it was suspended).
    reported: bool,
    /// Running tasks by node index.
    tasks: HashMap<usize, Addr<TaskActor>>,
    /// The final state being written, once `end` has decided it.
    final_state: Option<FlowState>,
}

impl FlowActor {
    pub fn new(
        plan: Arc<FlowPlan>,
        done: HashSet<String>,
        engine: Arc<Engine>,
        persister: Addr<Persister>,
        supervisor: Addr<FlowSupervisor>,
    ) -> Self {
        let scheduler = Scheduler::new(&plan.dag, plan.spec.options.max_parallel_tasks as usize, &done);
        FlowActor {
            plan,
            done,
            scheduler,
            phase: Phase::Starting,
            engine,
            session: None,
            cancel: CancellationToken::new(),
            persister,
            supervisor,
            reported: false,
            tasks: HashMap::new(),
            final_state: None,
        }
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

    /// The work of node `name`.
    fn work_for(&self, name: &str) -> Result<NodeWork, String> {
        let node = self
            .plan
            .dag
            .node(name)
            .ok_or_else(|| format!("node {name} is not in the DAG"))?;
        let spec = &self.plan.spec;
        match node.kind {
            NodeKind::Ingest => {
                let source = spec
                    .sources
                    .iter()
                    .find(|s| s.name == name)
                    .ok_or("source not found")?;
                // A source read by nothing but one output streams straight into it.
                let mut readers = self.plan.dag.dependents(name);
                let direct = match (readers.next(), readers.next()) {
                    (Some(only), None) if only.kind == NodeKind::Persist => {
                        let (_, load, store) = self.persist_work(&only.name)?;
                        Some(Box::new(DirectLoad { load, store }))
                    }
                    _ => None,
                };
                Ok(NodeWork::Ingest {
                    source: source.clone(),
                    store: self.store(source.store_id)?,
                    direct,
                })
            }
            NodeKind::Transform => {
                let t = spec
                    .transforms
                    .iter()
                    .find(|t| t.name == name)
                    .ok_or("transform not found")?;
                Ok(NodeWork::Transform {
                    name: t.name.clone(),
                    sql: t.sql.clone(),
                })
            }
            NodeKind::Persist => {
                let (output, load, store) = self.persist_work(name)?;
                Ok(NodeWork::Persist { output, load, store })
            }
        }
    }

    /// The output, load and target store of persist node `name`.
    fn persist_work(&self, name: &str) -> Result<(Output, Load, DataStore), String> {
        let spec = &self.plan.spec;
        let index = spec
            .outputs
            .iter()
            .position(|o| o.node_name() == name)
            .ok_or("output not found")?;
        let load = publish::loads(self.engine.instance(), self.flow_id(), &spec.outputs).swap_remove(index);
        Ok((
            spec.outputs[index].clone(),
            load,
            self.store(spec.target_store_id)?,
        ))
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
        if self.phase != Phase::Running {
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
                        name,
                        work,
                        max_attempts: self.plan.spec.options.max_attempts,
                        timeout: Duration::from_secs(self.plan.spec.options.task_timeout_s),
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
                        outcome: TaskOutcome::Failed(crate::engine::node::NodeError {
                            message,
                            transient: false,
                        }),
                    });
                }
            }
        }
        self.maybe_end(ctx);
    }

    /// Begins stopping: cancels running work and pending nodes.
    fn stop_flow(&mut self, reason: StopReason, ctx: &mut Context<Self>) {
        if matches!(self.phase, Phase::Stopping(_) | Phase::Ending) {
            return;
        }
        self.phase = Phase::Stopping(reason);
        self.cancel.cancel();
        if reason != StopReason::Suspended {
            for index in self.scheduler.cancel_pending() {
                self.record(FlowEvent::TaskCancelled {
                    task: self.scheduler.name(index).to_string(),
                });
            }
        }
        // Tasks stop within milliseconds; if one does not, end without it (its work is
        // cancelled and its late report is ignored).
        ctx.run_later(CANCEL_GRACE, |act, ctx| {
            if matches!(act.phase, Phase::Stopping(_)) {
                act.tasks.clear();
                act.end(ctx);
            }
        });
        self.maybe_end(ctx);
    }

    fn maybe_end(&mut self, ctx: &mut Context<Self>) {
        let idle = self.tasks.is_empty();
        let finished = match self.phase {
            Phase::Running => self.scheduler.is_finished(),
            Phase::Stopping(_) => idle,
            _ => false,
        };
        if finished {
            self.end(ctx);
        }
    }

    /// Ends the flow: publishes its staged outputs when every node succeeded, or discards them;
    /// then writes the final state and tells the supervisor. When suspending for shutdown it
    /// keeps everything for the next start.
    fn end(&mut self, ctx: &mut Context<Self>) {
        if self.phase == Phase::Ending {
            return;
        }
        let state = match self.phase {
            Phase::Stopping(StopReason::Suspended) => None,
            Phase::Stopping(StopReason::Cancelled) => Some(FlowState::Cancelled),
            Phase::Stopping(StopReason::Failed) => Some(FlowState::Failed),
            _ if self.scheduler.all_completed() => Some(FlowState::Completed),
            _ => Some(FlowState::Failed),
        };
        self.phase = Phase::Ending;
        self.final_state = state;
        self.cancel.cancel();
        let flow_id = self.flow_id();
        let Some(state) = state else {
            self.reported = true;
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
        let store = self.plan.stores.get(&self.plan.spec.target_store_id).cloned();
        let loads = publish::loads(self.engine.instance(), flow_id, &self.plan.spec.outputs);
        let count = loads.len();
        let pools = self.engine.pools().clone();
        let step = self.engine.handle().spawn(async move {
            let store = store.ok_or_else(|| "the target data store no longer exists".to_string())?;
            let started = std::time::Instant::now();
            if state == FlowState::Completed {
                if let Err(e) = publish::publish(&store, &loads, &pools).await {
                    let _ = publish::discard(&store, &loads, &pools).await;
                    return Err(e);
                }
            } else {
                publish::discard(&store, &loads, &pools).await?;
            }
            Ok::<_, String>((store.name, started.elapsed()))
        });
        ctx.wait(
            async move {
                step.await
                    .map_err(|e| format!("the publish step crashed: {e}"))
                    .and_then(|r| r)
            }
            .into_actor(self)
            .map(move |result, act, ctx| {
                let state = match (state, result) {
                    (FlowState::Completed, Ok((store, elapsed))) => {
                        let message = format!(
                            "published {count} output(s) to {store} in {:.2} s",
                            elapsed.as_secs_f64()
                        );
                        act.log(Level::Info, message);
                        FlowState::Completed
                    }
                    (FlowState::Completed, Err(e)) => {
                        let message = format!("publishing the outputs failed: {e}");
                        act.record(FlowEvent::FlowError { message });
                        FlowState::Failed
                    }
                    (other, Err(e)) => {
                        act.log(Level::Warn, format!("could not remove the staged outputs: {e}"));
                        other
                    }
                    (other, Ok(_)) => other,
                };
                act.final_state = Some(state);
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
                let written = persister
                    .send(Transition { flow_id, state })
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                // The work directory goes once the end is durable (not before: a crash in
                // between must still find the checkpoints).
                let _ = tokio::fs::remove_dir_all(&work_dir).await;
                written
            }
            .into_actor(self)
            .map(move |written, act, ctx| {
                match written {
                    Ok(()) => {
                        act.reported = true;
                        tracing::info!(flow_id, state = %state, "flow ended");
                        act.supervisor.do_send(FlowEnded { flow_id, state });
                    }
                    Err(e) => {
                        act.reported = true;
                        act.supervisor.do_send(FlowCrashed {
                            flow_id,
                            cause: format!("writing the final state failed: {e}"),
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
        let session = match self.engine.session(flow_id, memory) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                self.reported = true;
                self.supervisor.do_send(FlowCrashed { flow_id, cause: e });
                return ctx.stop();
            }
        };
        self.session = Some(session.clone());
        if let Some(limit) = self.plan.spec.options.flow_timeout_s {
            ctx.run_later(Duration::from_secs(limit), move |act, ctx| {
                if act.phase == Phase::Running {
                    act.record(FlowEvent::FlowError {
                        message: format!("timed out after {limit} s (options.flow_timeout_s)"),
                    });
                    act.stop_flow(StopReason::Failed, ctx);
                }
            });
        }
        // Completed nodes of an earlier run are tables again; then the flow is RUNNING.
        let done: Vec<String> = self
            .done
            .iter()
            .filter(|n| {
                self.plan
                    .dag
                    .node(n)
                    .is_some_and(|node| node.kind != NodeKind::Persist)
            })
            .cloned()
            .collect();
        let resumed = !self.done.is_empty();
        let engine_handle = self.engine.handle().clone();
        // Enqueued now, before anything asynchronous, so flows become RUNNING in the order the
        // supervisor started them.
        let running = self.persister.send(Transition {
            flow_id,
            state: FlowState::Running,
        });
        ctx.wait(
            async move {
                let registered = engine_handle
                    .spawn(async move {
                        for node in &done {
                            // A source streamed straight into its output has no checkpoint.
                            if checkpoint::staged(&session.work_dir, node).is_none() {
                                checkpoint::register(&session.ctx, &session.work_dir, node).await?;
                            }
                        }
                        Ok::<_, String>(())
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r);
                let running = running.await.unwrap_or_else(|e| Err(e.to_string()));
                (registered, running)
            }
            .into_actor(self)
            .map(move |(registered, running), act, ctx| {
                if act.phase != Phase::Starting {
                    return;
                }
                if let Err(e) = registered {
                    act.reported = true;
                    act.supervisor.do_send(FlowCrashed { flow_id, cause: e });
                    return ctx.stop();
                }
                if let Err(e) = running {
                    tracing::warn!(flow_id, error = %e, "could not write RUNNING");
                }
                act.phase = Phase::Running;
                if resumed {
                    act.log(
                        Level::Info,
                        format!(
                            "resuming: {} completed node(s) kept from the previous run",
                            act.done.len()
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
        if !self.reported {
            let cause = if std::thread::panicking() {
                "the flow's actor panicked".to_string()
            } else {
                "the flow's actor stopped unexpectedly".to_string()
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
            TaskOutcome::Completed { rows, elapsed } => {
                #[cfg(all(feature = "fault-injection", debug_assertions))]
                if crate::engine::faults::actor_should_panic(&name) {
                    panic!("injected panic in the flow actor after {name} completed");
                }
                self.scheduler.complete(msg.index);
                self.record(FlowEvent::TaskCompleted {
                    task: name,
                    rows,
                    elapsed,
                });
            }
            TaskOutcome::Failed(e) => {
                self.record(FlowEvent::TaskFailed {
                    task: name.clone(),
                    error: e.message,
                    retry_in: None,
                });
                for skipped in self.scheduler.fail(msg.index) {
                    self.record(FlowEvent::TaskSkipped {
                        task: self.scheduler.name(skipped).to_string(),
                        because: format!("{name} failed"),
                    });
                }
                if self.plan.spec.options.fail_fast && self.phase == Phase::Running {
                    self.log(
                        Level::Warn,
                        format!("fail_fast: stopping the flow because {name} failed"),
                    );
                    self.stop_flow(StopReason::Failed, ctx);
                }
            }
            TaskOutcome::Cancelled => {
                self.scheduler.cancel(msg.index);
                self.record(FlowEvent::TaskCancelled { task: name });
            }
            TaskOutcome::Panicked(message) => {
                // A crash, not a node failure: the supervisor restarts the flow from its
                // checkpoints.
                self.cancel.cancel();
                self.reported = true;
                self.supervisor.do_send(FlowCrashed {
                    flow_id: self.flow_id(),
                    cause: format!("task {name} panicked: {message}"),
                });
                self.phase = Phase::Ending;
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
        match self.phase {
            Phase::Running | Phase::Starting => {
                self.log(Level::Warn, "cancel requested".into());
                let was_starting = self.phase == Phase::Starting;
                self.phase = Phase::Running;
                self.stop_flow(StopReason::Cancelled, ctx);
                if was_starting {
                    self.maybe_end(ctx);
                }
                Ok(())
            }
            Phase::Stopping(StopReason::Cancelled) => Ok(()),
            Phase::Stopping(StopReason::Failed) => Err(FlowState::Failed),
            Phase::Stopping(StopReason::Suspended) => Err(FlowState::Running),
            Phase::Ending => Err(self.final_state.unwrap_or(FlowState::Running)),
        }
    }
}

impl Handler<Suspend> for FlowActor {
    type Result = ();

    fn handle(&mut self, _: Suspend, ctx: &mut Self::Context) {
        if matches!(self.phase, Phase::Running | Phase::Starting) {
            self.phase = Phase::Running;
            self.stop_flow(StopReason::Suspended, ctx);
        }
    }
}
