//! FlowSupervisor: admits flows up to `max_running_flows` (the rest wait READY, first in first
//! out), starts a FlowActor for each and keeps their addresses in a registry, routes cancels,
//! restarts crashed flows from their checkpoints with backoff up to `max_restarts`, recovers
//! flows a previous process left unfinished, and parks running flows on shutdown. What it
//! decides lives in [`Admission`]; plans come from the [`PlanLoader`] it is given; this actor
//! does the messaging, the logging and the IO around them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;
use sea_orm::DatabaseConnection;

use super::admission::{Admission, CancelRoute, CrashDecision, Lost};
use super::errors::LoadError;
use super::flow::FlowActor;
use super::leases::Leases;
use super::messages::*;
use super::persister::Persister;
use super::plan_loader::{LoadedFlow, PlanLoader};
use super::sweep::sweep_work_dirs;
use crate::domain::flow::{FlowEvent, FlowState, Level};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::repo::leases::Claimed;

pub struct SupervisorConfig {
    pub max_running_flows: usize,
    pub max_restarts: u32,
    /// How long a FAILED or CANCELLED flow keeps its checkpoints for a retry.
    pub retry_retention: Duration,
    /// With PostgreSQL metadata: this instance's leases. Flows are then claimed from the
    /// database (by whichever instance has room) instead of taken as they are created.
    pub leases: Option<Arc<Leases>>,
    /// Where claims, takeovers and lost leases are counted.
    pub metrics: Arc<Metrics>,
}

/// How long a flow whose plan could not be loaded for want of the metadata database waits
/// before it is loaded again.
const LOAD_RETRY: Duration = Duration::from_secs(1);
/// How often an instance looks for flows to claim (besides when a flow is created or ends here).
const CLAIM_EVERY: Duration = Duration::from_millis(500);
/// How often an instance looks for cancels asked through other instances.
const CANCELS_EVERY: Duration = Duration::from_millis(250);

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
    /// Several instances: this one's leases, and what it keeps about them.
    leases: Option<Arc<Leases>>,
    cluster: Cluster,
    metrics: Arc<Metrics>,
}

/// What the supervisor keeps about its leases (several instances).
#[derive(Default)]
struct Cluster {
    /// A claim is under way; another waits for it.
    claiming: bool,
    /// A claim was asked for while one ran.
    claim_again: bool,
    /// A renewal is under way.
    renewing: bool,
    /// When the leases were last renewed (or found to need none).
    renewed_at: Option<Instant>,
    /// Flows whose cancel (asked through some instance) has been acted on here.
    cancels_seen: HashSet<i64>,
    /// Flows taken over from an instance that stopped renewing: the line their log gets.
    takeovers: HashMap<i64, String>,
    /// Flows this supervisor is ending itself (cancelled while waiting, failed unloadable,
    /// given up after crashes): not held any more, but not to be claimed again meanwhile.
    ending: HashSet<i64>,
    /// Flows stopped here because their lease could not be renewed (nobody may have taken them:
    /// then this instance claims them back).
    lost: HashSet<i64>,
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
            leases: config.leases,
            cluster: Cluster::default(),
            metrics: config.metrics,
        }
    }

    /// Several instances: claims flows from the database while there is room, one claim at a
    /// time, oldest flow first.
    fn claim(&mut self, ctx: &mut Context<Self>) {
        let Some(leases) = self.leases.clone() else {
            return;
        };
        if self.cluster.claiming {
            self.cluster.claim_again = true;
            return;
        }
        if self.admission.room() == 0 {
            return;
        }
        self.cluster.claiming = true;
        let mut held = self.admission.held();
        held.extend(self.cluster.ending.iter().copied());
        let claim = async move { leases.claim_next(&held).await };
        ctx.spawn(claim.into_actor(self).map(|claimed, act, ctx| {
            act.cluster.claiming = false;
            let again = std::mem::take(&mut act.cluster.claim_again);
            match claimed {
                Ok(Some(claimed)) => {
                    act.claimed(claimed, ctx);
                    act.claim(ctx);
                }
                Ok(None) if again => act.claim(ctx),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot claim flows"),
            }
        }));
    }

    /// Flow `claimed` is this instance's now: it waits for a slot here like a recovered flow.
    fn claimed(&mut self, claimed: Claimed, ctx: &mut Context<Self>) {
        let flow_id = claimed.flow_id;
        let me = self
            .leases
            .as_ref()
            .map(|l| l.instance().to_string())
            .unwrap_or_default();
        self.metrics.leases.with_label_values(&["claimed"]).inc();
        if self.cluster.lost.remove(&flow_id)
            && claimed.was_running
            && claimed.previous_owner.as_deref() == Some(me.as_str())
        {
            self.cluster.takeovers.insert(
                flow_id,
                format!("resumed on instance {me} after it could not renew its lease"),
            );
        }
        if let Some(previous) = claimed.previous_owner.as_deref().filter(|p| *p != me) {
            if claimed.was_running {
                self.metrics.leases.with_label_values(&["taken_over"]).inc();
                tracing::warn!(flow_id, instance = %me, previous = %previous, "taking over a flow whose instance stopped renewing its lease");
                self.cluster.takeovers.insert(
                    flow_id,
                    format!("resumed on instance {me} after instance {previous} stopped renewing its lease"),
                );
            }
        }
        self.admission
            .recover(flow_id, claimed.exclusive_input, claimed.was_running);
        if claimed.cancel_requested {
            self.cluster.cancels_seen.insert(flow_id);
            let cancel = self.route_cancel(flow_id);
            ctx.spawn(cancel.map(|_, _, _| ()));
        }
        self.admit(ctx);
    }

    /// Several instances: renews the leases of every flow held here; stops the flows another
    /// instance took over, and all of them when the leases could not be renewed for a whole
    /// lease (another instance may have taken any of them).
    fn renew(&mut self, ctx: &mut Context<Self>) {
        let Some(leases) = self.leases.clone() else {
            return;
        };
        if self.cluster.renewing {
            return;
        }
        let held = self.admission.held();
        if held.is_empty() {
            self.cluster.renewed_at = Some(Instant::now());
            return;
        }
        self.cluster.renewing = true;
        let lease = leases.lease();
        let renew = async move { (leases.renew(&held).await, held) };
        ctx.spawn(renew.into_actor(self).map(move |(renewed, asked), act, ctx| {
            act.cluster.renewing = false;
            match renewed {
                Ok(still) => {
                    act.cluster.renewed_at = Some(Instant::now());
                    let still: HashSet<i64> = still.into_iter().collect();
                    for flow_id in asked.into_iter().filter(|id| !still.contains(id)) {
                        act.lose(flow_id, "another instance took it over", true, ctx);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot renew the leases of this instance's flows");
                    let since = act.cluster.renewed_at.map_or(lease, |t| t.elapsed());
                    if since >= lease {
                        for flow_id in act.admission.held() {
                            act.lose(
                                flow_id,
                                "its lease could not be renewed for a whole lease",
                                false,
                                ctx,
                            );
                        }
                    }
                }
            }
        }));
    }

    /// Stops flow `flow_id` here without ending it: this instance no longer holds its lease,
    /// so what it would write or publish is another instance's to do.
    /// `taken`: another instance holds it now (rather than: its lease could not be renewed).
    fn lose(&mut self, flow_id: i64, why: &str, taken: bool, ctx: &mut Context<Self>) {
        self.cluster.cancels_seen.remove(&flow_id);
        self.cluster.takeovers.remove(&flow_id);
        let lost = self.admission.lost(flow_id);
        if lost == Lost::Unknown {
            return;
        }
        tracing::warn!(
            flow_id,
            why,
            "this instance no longer holds the flow's lease; stopping it here"
        );
        self.metrics.leases.with_label_values(&["lost"]).inc();
        if !taken {
            // Maybe nobody took it: this instance may claim it back.
            self.cluster.lost.insert(flow_id);
        }
        self.persister.do_send(Untrack { flow_id });
        if lost == Lost::Running {
            if let Some(actor) = self.registry.get(&flow_id) {
                actor.do_send(Suspend);
            }
        }
        self.admit(ctx);
    }

    /// Several instances: acts on the cancels asked (through any instance) of flows held here.
    fn poll_cancels(&mut self, ctx: &mut Context<Self>) {
        let Some(leases) = self.leases.clone() else {
            return;
        };
        let held: Vec<i64> = self
            .admission
            .held()
            .into_iter()
            .filter(|id| !self.cluster.cancels_seen.contains(id))
            .collect();
        if held.is_empty() {
            return;
        }
        let poll = async move { leases.cancels_requested(&held).await };
        ctx.spawn(poll.into_actor(self).map(|asked, act, ctx| match asked {
            Ok(flows) => {
                for flow_id in flows {
                    if act.cluster.cancels_seen.insert(flow_id) {
                        tracing::info!(flow_id, "cancel asked through another instance");
                        let cancel = act.route_cancel(flow_id);
                        ctx.spawn(cancel.map(|_, _, _| ()));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for cancels asked through other instances"),
        }));
    }

    /// Sends a cancel where the flow is: it waits here, starts here or runs here.
    fn route_cancel(&mut self, flow_id: i64) -> ResponseActFuture<Self, CancelOutcome> {
        match self.admission.cancel(flow_id) {
            CancelRoute::Idle => self.cancel_idle(flow_id),
            CancelRoute::WhenStarted => Box::pin(actix::fut::ready(CancelOutcome::Sent)),
            CancelRoute::Running => self.cancel_running(flow_id),
            CancelRoute::Unknown => Box::pin(actix::fut::ready(CancelOutcome::Unknown)),
        }
    }

    /// Several instances: cancels a flow this instance does not hold. The cancel is recorded
    /// on the flow; its owner acts on it within `CANCELS_EVERY`. A flow nobody runs (READY and
    /// not claimed, or its owner gone) is claimed here and cancelled at once.
    fn cancel_elsewhere(
        &mut self,
        leases: Arc<Leases>,
        flow_id: i64,
    ) -> ResponseActFuture<Self, CancelOutcome> {
        let me = leases.instance().to_string();
        let asked = async move {
            match leases.request_cancel(flow_id).await? {
                Some(owner) if owner != me => Ok(None),
                _ => leases.claim(flow_id).await,
            }
        };
        Box::pin(asked.into_actor(self).then(
            move |claimed, act, ctx| -> ResponseActFuture<Self, CancelOutcome> {
                match claimed {
                    Ok(Some(claimed)) => {
                        act.cluster.cancels_seen.insert(flow_id);
                        act.admission
                            .recover(flow_id, claimed.exclusive_input, claimed.was_running);
                        let cancel = act.route_cancel(flow_id);
                        act.admit(ctx);
                        cancel
                    }
                    // Its owner acts on it (or another instance claiming it right now sees it).
                    Ok(None) => Box::pin(actix::fut::ready(CancelOutcome::Sent)),
                    Err(e) => {
                        tracing::error!(flow_id, error = %e, "cannot record a cancel");
                        Box::pin(actix::fut::ready(CancelOutcome::Unknown))
                    }
                }
            },
        ))
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
            Err(e) if self.admission.is_parked() => {
                // Shutting down: the metadata database may be out of reach for that alone. The
                // flow keeps its state; the next start (or another instance) runs it.
                tracing::warn!(flow_id, error = %e, "flow not started: shutting down");
                return self.admission.not_started(flow_id);
            }
            Err(e) if e.is_transient() => {
                // The metadata database is out of reach (for now): not the flow's fault. It
                // keeps its state and is loaded again shortly.
                tracing::warn!(flow_id, error = %e, "cannot load flow now; trying again in {LOAD_RETRY:?}");
                self.admission.not_started(flow_id);
                ctx.run_later(LOAD_RETRY, move |act, ctx| {
                    act.admission.submit(flow_id, None);
                    act.admit(ctx);
                });
                return;
            }
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
        let started = self.admission.started(flow_id);
        if started.lost {
            // Another instance took it over while it was being loaded.
            self.admission.ended(flow_id, false);
            return;
        }
        self.persister.do_send(Track {
            flow_id,
            picture,
            resync,
        });
        let takeover = self.cluster.takeovers.remove(&flow_id);
        if let Some(leases) = &self.leases {
            self.record(
                flow_id,
                FlowEvent::Log {
                    level: Level::Info,
                    task: None,
                    message: format!("running on instance {}", leases.instance()),
                },
            );
        }
        if started.recovered {
            let message = takeover.unwrap_or_else(|| "resumed after restart".into());
            tracing::warn!(flow_id, "flow {message}");
            self.record(
                flow_id,
                FlowEvent::Log {
                    level: Level::Warn,
                    task: None,
                    message,
                },
            );
        }
        let actor = FlowActor::new(
            Arc::new(plan),
            done,
            restarted,
            self.engine.clone(),
            self.persister.clone(),
            ctx.address(),
        )
        .leased(self.leases.clone())
        .start();
        if started.cancel {
            actor.do_send(Cancel);
        }
        self.registry.insert(flow_id, actor);
    }

    /// A flow whose plan cannot be loaded (its input unreadable, a store gone): FAILED, with
    /// `cause` (already safe to show) in its errors.
    fn fail_unloadable(&mut self, flow_id: i64, cause: String, ctx: &mut Context<Self>) {
        self.cluster.ending.insert(flow_id);
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
            .into_actor(self)
            .map(move |_, act, _| {
                act.cluster.ending.remove(&flow_id);
            }),
        );
    }

    /// Cancels a flow that is not running (it waited in the queue or for a restart).
    fn cancel_idle(&mut self, flow_id: i64) -> ResponseActFuture<Self, CancelOutcome> {
        self.cluster.ending.insert(flow_id);
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
                act.cluster.ending.remove(&flow_id);
                act.cluster.cancels_seen.remove(&flow_id);
                act.admit(ctx);
                act.claim(ctx);
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
        self.cluster.ending.insert(flow_id);
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
                act.cluster.ending.remove(&flow_id);
                act.cluster.cancels_seen.remove(&flow_id);
                act.admit(ctx);
                act.claim(ctx);
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
        if let Some(leases) = &self.leases {
            ctx.run_interval(CLAIM_EVERY, |act, ctx| act.claim(ctx));
            ctx.run_interval(leases.renew_every(), |act, ctx| act.renew(ctx));
            ctx.run_interval(CANCELS_EVERY, |act, ctx| act.poll_cancels(ctx));
        }
    }
}

impl Handler<StartFlow> for FlowSupervisor {
    type Result = ();

    fn handle(&mut self, msg: StartFlow, ctx: &mut Self::Context) {
        if self.leases.is_some() {
            // Whichever instance has room claims it (this one first, if it has).
            return self.claim(ctx);
        }
        self.admission.submit(msg.flow_id, msg.exclusive_input);
        self.admit(ctx);
    }
}

impl Handler<CancelFlow> for FlowSupervisor {
    type Result = ResponseActFuture<Self, CancelOutcome>;

    fn handle(&mut self, msg: CancelFlow, _: &mut Self::Context) -> Self::Result {
        let held = self.admission.held().contains(&msg.flow_id);
        match self.leases.clone() {
            Some(leases) if !held => self.cancel_elsewhere(leases, msg.flow_id),
            _ => self.route_cancel(msg.flow_id),
        }
    }
}

impl Handler<FlowEnded> for FlowSupervisor {
    type Result = ();

    fn handle(&mut self, msg: FlowEnded, ctx: &mut Self::Context) {
        self.registry.remove(&msg.flow_id);
        self.admission.ended(msg.flow_id, msg.state.is_final());
        self.cluster.cancels_seen.remove(&msg.flow_id);
        self.admit(ctx);
        self.claim(ctx);
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

    fn handle(&mut self, _: Recover, ctx: &mut Self::Context) -> Self::Result {
        if self.leases.is_some() {
            // Unfinished flows are claimed like any other: those of an instance that stopped
            // (this one's earlier self, with a new id) once their leases run out.
            self.claim(ctx);
            self.sweep(ctx);
            return Box::pin(actix::fut::ready(()));
        }
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
        let held = self.admission.held();
        let leases = self.leases.clone();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + msg.timeout;
            while !registry.is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = persister.send(FlushAll).await;
            let mut held = held;
            held.retain(|id| !registry.contains_key(id)); // still stopping: not handed over
                                                          // Another instance may take the parked flows at once (they resume from their
                                                          // checkpoints there) instead of after their leases run out.
            if let Some(leases) = leases {
                match leases.release(&held).await {
                    Ok(()) if !held.is_empty() => {
                        tracing::info!(flows = held.len(), "handed this instance's flows back")
                    }
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot hand this instance's flows back; they wait for their leases to run out")
                    }
                }
            }
        })
    }
}
