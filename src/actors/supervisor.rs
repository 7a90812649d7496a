//! FlowSupervisor: admits flows up to `max_running_flows` (the rest wait READY, first in first
//! out), starts a FlowActor for each and keeps their addresses in a registry, routes cancels,
//! restarts crashed flows from their checkpoints with backoff up to `max_restarts`, recovers
//! flows a previous process left unfinished, and parks running flows on shutdown. What it
//! decides lives in [`Admission`]; plans come from the [`PlanLoader`] it is given; this actor
//! does the messaging, the logging and the IO around them.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use sea_orm::DatabaseConnection;

use super::admission::{Admission, CancelRoute, CrashDecision};
use super::errors::LoadError;
use super::flow::FlowActor;
use super::messages::*;
use super::persister::Persister;
use super::plan_loader::{LoadedFlow, PlanLoader};
use super::sweep::sweep_work_dirs;
use crate::domain::flow::{FlowEvent, FlowState, Level};
use crate::engine::Engine;

pub struct SupervisorConfig {
    pub max_running_flows: usize,
    pub max_restarts: u32,
    /// How long a FAILED or CANCELLED flow keeps its checkpoints for a retry.
    pub retry_retention: Duration,
}

pub struct FlowSupervisor {
    db: DatabaseConnection,
    engine: Arc<Engine>,
    persister: Addr<Persister>,
    plans: Arc<dyn PlanLoader>,
    /// How long a FAILED or CANCELLED flow keeps its checkpoints for a retry.
    retry_retention: Duration,
    /// Which flows wait, start, run or restart; where cancels go.
    admission: Admission,
    /// The actors of the running flows (the flows `admission` counts as running). Shared with
    /// `Park`'s reply, which waits (outside the actor) for it to empty while this actor handles
    /// the flows' `FlowEnded`.
    registry: Arc<DashMap<i64, Addr<FlowActor>>>,
    /// A sweep of the work directories is under way (`sweep`); another waits for it.
    sweeping: bool,
    /// A sweep was asked for while one ran.
    sweep_again: bool,
}

impl FlowSupervisor {
    pub fn new(
        db: DatabaseConnection,
        engine: Arc<Engine>,
        persister: Addr<Persister>,
        plans: Arc<dyn PlanLoader>,
        config: SupervisorConfig,
    ) -> Self {
        FlowSupervisor {
            db,
            engine,
            persister,
            plans,
            retry_retention: config.retry_retention,
            admission: Admission::new(config.max_running_flows, config.max_restarts),
            registry: Arc::new(DashMap::new()),
            sweeping: false,
            sweep_again: false,
        }
    }

    /// Removes the work directories that no flow needs any more (see `sweep_work_dirs`), one
    /// sweep at a time.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping {
            self.sweep_again = true;
            return;
        }
        self.sweeping = true;
        let sweep = sweep_work_dirs(self.db.clone(), self.engine.clone(), self.retry_retention);
        ctx.spawn(sweep.into_actor(self).map(|_, act, ctx| {
            act.sweeping = false;
            if std::mem::take(&mut act.sweep_again) {
                act.sweep(ctx);
            }
        }));
    }

    fn record(&self, flow_id: i64, event: FlowEvent) {
        self.persister.do_send(Record { flow_id, event });
    }

    /// Starts loading the next waiting flow if a slot is free (and, once it is launched, the
    /// next).
    fn admit(&mut self, ctx: &mut Context<Self>) {
        let Some(flow_id) = self.admission.admit_next() else {
            return;
        };
        let (plans, persister) = (self.plans.clone(), self.persister.clone());
        let load = async move {
            let live = persister.send(GetPicture { flow_id }).await.ok().flatten();
            plans.load(flow_id, live).await
        };
        ctx.spawn(load.into_actor(self).map(move |loaded, act, ctx| {
            act.launch(flow_id, loaded, ctx);
            act.admit(ctx);
        }));
    }

    fn launch(
        &mut self,
        flow_id: i64,
        loaded: Result<Option<LoadedFlow>, LoadError>,
        ctx: &mut Context<Self>,
    ) {
        let loaded = match loaded {
            Ok(Some(l)) => l,
            Ok(None) => return self.admission.not_started(flow_id), // already final
            Err(e) => {
                tracing::error!(flow_id, error = %e, "cannot load flow");
                self.admission.not_started(flow_id);
                self.fail_unloadable(flow_id, e.for_flow(flow_id), ctx);
                return;
            }
        };
        let LoadedFlow {
            plan,
            picture,
            done,
            restarted,
            resync,
        } = loaded;
        self.persister.do_send(Track {
            flow_id,
            picture,
            resync,
        });
        let started = self.admission.started(flow_id);
        if started.recovered {
            self.record(
                flow_id,
                FlowEvent::Log {
                    level: Level::Warn,
                    task: None,
                    message: "resumed after restart".into(),
                },
            );
            tracing::warn!(flow_id, "flow resumed after restart");
        }
        let actor = FlowActor::new(
            Arc::new(plan),
            done,
            restarted,
            self.engine.clone(),
            self.persister.clone(),
            ctx.address(),
        )
        .start();
        if started.cancel {
            actor.do_send(Cancel);
        }
        self.registry.insert(flow_id, actor);
    }

    /// A flow whose plan cannot be loaded (its input unreadable, a store gone): FAILED, with
    /// `cause` (already safe to show) in its errors.
    fn fail_unloadable(&mut self, flow_id: i64, cause: String, ctx: &mut Context<Self>) {
        let plans = self.plans.clone();
        let persister = self.persister.clone();
        ctx.spawn(
            async move {
                let Some(picture) = plans.stored_picture(flow_id).await else {
                    return;
                };
                if picture.state.is_final() {
                    return;
                }
                persister.do_send(Track {
                    flow_id,
                    picture,
                    resync: false,
                });
                persister.do_send(Record {
                    flow_id,
                    event: FlowEvent::FlowError {
                        message: format!("cannot start: {cause}"),
                    },
                });
                let _ = persister
                    .send(Transition {
                        flow_id,
                        state: FlowState::Failed,
                    })
                    .await;
            }
            .into_actor(self),
        );
    }

    /// Cancels a flow that is not running (it waited in the queue or for a restart).
    fn cancel_idle(&mut self, flow_id: i64) -> ResponseActFuture<Self, CancelOutcome> {
        // A flow recovered or restarted may have staged outputs from an earlier run.
        let discard = discard_staged(self.plans.clone(), self.engine.clone(), flow_id);
        let plans = self.plans.clone();
        let persister = self.persister.clone();
        Box::pin(
            async move {
                if persister
                    .send(GetPicture { flow_id })
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                {
                    let Some(picture) = plans.stored_picture(flow_id).await else {
                        return CancelOutcome::Unknown;
                    };
                    if picture.state.is_final() {
                        return CancelOutcome::AlreadyFinal(picture.state);
                    }
                    persister.do_send(Track {
                        flow_id,
                        picture,
                        resync: false,
                    });
                }
                discard.await;
                persister.do_send(Record {
                    flow_id,
                    event: FlowEvent::Log {
                        level: Level::Warn,
                        task: None,
                        message: "cancel requested".into(),
                    },
                });
                match persister
                    .send(Transition {
                        flow_id,
                        state: FlowState::Cancelled,
                    })
                    .await
                {
                    Ok(Ok(())) => CancelOutcome::Cancelled,
                    _ => CancelOutcome::Unknown,
                }
            }
            .into_actor(self)
            .map(move |outcome, act, ctx| {
                act.admission.forget(flow_id);
                act.admit(ctx);
                outcome
            }),
        )
    }

    /// Sends a cancel to the actor of running flow `flow_id`.
    fn cancel_running(&mut self, flow_id: i64) -> ResponseActFuture<Self, CancelOutcome> {
        let Some(actor) = self.registry.get(&flow_id).map(|a| a.clone()) else {
            return Box::pin(actix::fut::ready(CancelOutcome::Unknown));
        };
        Box::pin(
            actor
                .send(Cancel)
                .into_actor(self)
                .map(move |reply, act, _| match reply {
                    Ok(Ok(())) => {
                        act.admission.cancel_accepted(flow_id);
                        CancelOutcome::Sent
                    }
                    Ok(Err(state)) if state.is_final() => CancelOutcome::AlreadyFinal(state),
                    _ => CancelOutcome::Unknown,
                }),
        )
    }

    /// Restarts crashed flow `flow_id` after `delay` (unless it is cancelled meanwhile).
    fn restart_later(&mut self, flow_id: i64, attempt: u32, delay: Duration, ctx: &mut Context<Self>) {
        ctx.run_later(delay, move |act, ctx| {
            if act.admission.restart_due(flow_id) {
                tracing::warn!(flow_id, attempt, "restarting flow");
                act.admit(ctx);
            }
        });
    }

    /// Ends crashed flow `flow_id` for good (FAILED: it crashed too often; CANCELLED: it
    /// crashed while being cancelled): what it staged goes, then it gets `state`.
    fn give_up(&mut self, flow_id: i64, state: FlowState, ctx: &mut Context<Self>) {
        let persister = self.persister.clone();
        let discard = discard_staged(self.plans.clone(), self.engine.clone(), flow_id);
        ctx.spawn(
            async move {
                discard.await;
                let _ = persister.send(Transition { flow_id, state }).await;
            }
            .into_actor(self)
            .map(move |_, act, ctx| {
                act.admission.forget(flow_id);
                act.admit(ctx);
                act.sweep(ctx);
            }),
        );
    }
}

/// Removes whatever a flow that will not run again left staged in its target (best effort:
/// a flow whose input or store is gone has nothing to discard that Sluice can reach).
async fn discard_staged(plans: Arc<dyn PlanLoader>, engine: Arc<Engine>, flow_id: i64) {
    let Some(staged) = plans.staged_outputs(flow_id).await else {
        return;
    };
    let handle = engine.handle().clone();
    let done = handle
        .spawn(async move { engine.discard(&staged.store, &staged.loads).await })
        .await;
    if let Ok(Err(e)) = done {
        tracing::warn!(flow_id, error = %e, "could not remove a flow's staged outputs");
    }
}

/// How often the supervisor sweeps the work directories besides when a flow ends.
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

impl Actor for FlowSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SWEEP_INTERVAL, |act, ctx| act.sweep(ctx));
    }
}

impl Handler<StartFlow> for FlowSupervisor {
    type Result = ();

    fn handle(&mut self, msg: StartFlow, ctx: &mut Self::Context) {
        self.admission.submit(msg.flow_id, msg.exclusive_input);
        self.admit(ctx);
    }
}

impl Handler<CancelFlow> for FlowSupervisor {
    type Result = ResponseActFuture<Self, CancelOutcome>;

    fn handle(&mut self, msg: CancelFlow, _: &mut Self::Context) -> Self::Result {
        match self.admission.cancel(msg.flow_id) {
            CancelRoute::Idle => self.cancel_idle(msg.flow_id),
            CancelRoute::WhenStarted => Box::pin(actix::fut::ready(CancelOutcome::Sent)),
            CancelRoute::Running => self.cancel_running(msg.flow_id),
            CancelRoute::Unknown => Box::pin(actix::fut::ready(CancelOutcome::Unknown)),
        }
    }
}

impl Handler<FlowEnded> for FlowSupervisor {
    type Result = ();

    fn handle(&mut self, msg: FlowEnded, ctx: &mut Self::Context) {
        self.registry.remove(&msg.flow_id);
        self.admission.ended(msg.flow_id, msg.state.is_final());
        self.admit(ctx);
        if msg.state.is_final() {
            self.sweep(ctx);
        }
    }
}

impl Handler<FlowCrashed> for FlowSupervisor {
    type Result = ();

    fn handle(&mut self, msg: FlowCrashed, ctx: &mut Self::Context) {
        let flow_id = msg.flow_id;
        self.registry.remove(&flow_id);
        let decision = self.admission.crashed(flow_id);
        // The service log gets the whole cause; the flow's lines only what they may show.
        let logged = crate::secrets::redact_urls(msg.cause.log_text());
        let cause = crate::secrets::redact_urls(&msg.cause.public_text(flow_id));
        let max = self.admission.max_restarts();
        match decision {
            CrashDecision::Duplicate => return,
            CrashDecision::Restart { attempt, delay } => {
                tracing::warn!(flow_id, attempt, max_restarts = max, cause = %logged, delay_ms = delay.as_millis() as u64, "flow crashed; restarting from its checkpoints");
                self.record(
                    flow_id,
                    FlowEvent::Crashed {
                        restart: attempt,
                        max_restarts: max,
                        cause,
                        retry_in: Some(delay),
                    },
                );
                self.restart_later(flow_id, attempt, delay, ctx);
            }
            CrashDecision::GiveUp { attempt } => {
                tracing::warn!(flow_id, restarts = attempt - 1, cause = %logged, "flow crashed too often; failing it");
                self.record(
                    flow_id,
                    FlowEvent::Crashed {
                        restart: attempt,
                        max_restarts: max,
                        cause,
                        retry_in: None,
                    },
                );
                self.give_up(flow_id, FlowState::Failed, ctx);
            }
            CrashDecision::Cancelled => {
                tracing::warn!(flow_id, cause = %logged, "flow crashed while it was being cancelled; it ends CANCELLED");
                self.record(
                    flow_id,
                    FlowEvent::Log {
                        level: Level::Warn,
                        task: None,
                        message: format!(
                            "the flow crashed while it was being cancelled ({cause}); it is not restarted"
                        ),
                    },
                );
                self.give_up(flow_id, FlowState::Cancelled, ctx);
            }
        }
        self.admit(ctx);
    }
}

impl Handler<Recover> for FlowSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Recover, _: &mut Self::Context) -> Self::Result {
        let plans = self.plans.clone();
        Box::pin(async move { plans.unfinished().await }.into_actor(self).map(
            |found, act, ctx| match found {
                Ok(flows) => {
                    for flow in flows {
                        act.admission
                            .recover(flow.flow_id, flow.exclusive_input, flow.was_running);
                    }
                    if act.admission.waiting() > 0 {
                        tracing::info!(flows = act.admission.waiting(), "recovering unfinished flows");
                    }
                    act.admit(ctx);
                    act.sweep(ctx);
                }
                Err(e) => tracing::error!(error = %e, "cannot list unfinished flows"),
            },
        ))
    }
}

impl Handler<Park> for FlowSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Park, _: &mut Self::Context) -> Self::Result {
        self.admission.park();
        tracing::info!(
            running = self.registry.len(),
            waiting = self.admission.waiting(),
            "parking flows for shutdown"
        );
        for entry in self.registry.iter() {
            entry.value().do_send(Suspend);
        }
        let registry = self.registry.clone();
        let persister = self.persister.clone();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + msg.timeout;
            while !registry.is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = persister.send(FlushAll).await;
        })
    }
}
