//! FlowSupervisor: admits flows up to `max_running_flows` (the rest wait READY, first in first
//! out), starts a FlowActor for each and keeps their addresses in a registry, routes cancels,
//! restarts crashed flows from their checkpoints with backoff up to `max_restarts`, recovers
//! flows a previous process left unfinished, and parks running flows on shutdown.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use sea_orm::DatabaseConnection;

use super::errors::LoadError;
use super::flow::FlowActor;
use super::messages::*;
use super::persister::Persister;
use crate::domain::cursor::{CursorEntry, CursorStart};
use crate::domain::flow::{FlowEvent, FlowPicture, FlowState, Level, TaskState};
use crate::domain::plan::{RunPlan, UnitKind};
use crate::engine::{checkpoint, cursor_read, publish, Engine};
use crate::repo::{self, RepoError};
use crate::secrets::Cipher;

/// Delay before restart `n` (1-based): 0.5 s, 1 s, 2 s, ... capped at 30 s.
pub fn restart_delay(n: u32) -> Duration {
    super::task::retry_delay(n)
}

pub struct SupervisorConfig {
    pub max_running_flows: usize,
    pub max_restarts: u32,
    pub max_log_lines: usize,
    /// How long a FAILED or CANCELLED flow keeps its checkpoints for a retry.
    pub retry_retention: Duration,
}

pub struct FlowSupervisor {
    db: DatabaseConnection,
    cipher: Cipher,
    engine: Arc<Engine>,
    persister: Addr<Persister>,
    config: SupervisorConfig,
    /// Flows waiting for a slot, in arrival order.
    queue: VecDeque<i64>,
    /// The flow whose plan is being loaded (it holds a slot). One at a time, so flows start in
    /// exactly the order they were admitted.
    starting: Option<i64>,
    /// Running flows. Shared with `Park`'s reply, which waits (outside the actor) for it to
    /// empty while this actor handles the flows' `FlowEnded`.
    registry: Arc<DashMap<i64, Addr<FlowActor>>>,
    /// Cancels that arrived while a flow was starting.
    cancel_on_start: HashSet<i64>,
    /// Crashed flows waiting out their restart delay, with the restart number.
    restarting: HashMap<i64, u32>,
    /// Restarts so far, per flow (reset when the flow ends).
    restarts: HashMap<i64, u32>,
    /// Flows found unfinished at start-up (their logs say so once they run).
    recovered: HashSet<i64>,
    /// Shutting down: admit nothing more.
    parked: bool,
    /// Flows of incremental inputs (flow id to input id): one flow of such an input runs at a
    /// time, the others wait READY (in arrival order).
    exclusive: HashMap<i64, i64>,
    /// A sweep of the work directories is under way (`sweep`); another waits for it.
    sweeping: bool,
    /// A sweep was asked for while one ran.
    sweep_again: bool,
}

impl FlowSupervisor {
    pub fn new(
        db: DatabaseConnection,
        cipher: Cipher,
        engine: Arc<Engine>,
        persister: Addr<Persister>,
        config: SupervisorConfig,
    ) -> Self {
        FlowSupervisor {
            db,
            cipher,
            engine,
            persister,
            config,
            queue: VecDeque::new(),
            starting: None,
            registry: Arc::new(DashMap::new()),
            cancel_on_start: HashSet::new(),
            restarting: HashMap::new(),
            restarts: HashMap::new(),
            recovered: HashSet::new(),
            parked: false,
            exclusive: HashMap::new(),
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
        let sweep = sweep_work_dirs(self.db.clone(), self.engine.clone(), self.config.retry_retention);
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

    /// The inputs held by a flow that is starting, running or waiting to restart.
    fn held_inputs(&self) -> HashSet<i64> {
        self.registry
            .iter()
            .map(|e| *e.key())
            .chain(self.starting)
            .chain(self.restarting.keys().copied())
            .filter_map(|id| self.exclusive.get(&id).copied())
            .collect()
    }

    /// Starts the next waiting flow if a slot is free (and, once it is launched, the next). A
    /// flow of an incremental input whose other flow runs is passed over: it keeps its place.
    fn admit(&mut self, ctx: &mut Context<Self>) {
        if self.parked || self.starting.is_some() || self.registry.len() >= self.config.max_running_flows {
            return;
        }
        let held = self.held_inputs();
        let next = self
            .queue
            .iter()
            .position(|id| self.exclusive.get(id).is_none_or(|input| !held.contains(input)));
        let Some(flow_id) = next.and_then(|i| self.queue.remove(i)) else {
            return;
        };
        self.starting = Some(flow_id);
        let load = load_flow(
            self.db.clone(),
            self.cipher.clone(),
            self.engine.clone(),
            self.persister.clone(),
            flow_id,
            self.config.max_log_lines,
        );
        ctx.spawn(load.into_actor(self).map(move |loaded, act, ctx| {
            act.starting = None;
            act.launch(flow_id, loaded, ctx);
            act.admit(ctx);
        }));
    }

    fn launch(&mut self, flow_id: i64, loaded: Result<Option<Loaded>, LoadError>, ctx: &mut Context<Self>) {
        let loaded = match loaded {
            Ok(Some(l)) => l,
            Ok(None) => return, // already final
            Err(e) => {
                tracing::error!(flow_id, error = %e, "cannot load flow");
                self.fail_unloadable(flow_id, e.for_flow(flow_id), ctx);
                return;
            }
        };
        let Loaded {
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
        if self.recovered.remove(&flow_id) {
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
        if self.cancel_on_start.remove(&flow_id) {
            actor.do_send(Cancel);
        }
        self.registry.insert(flow_id, actor);
    }

    /// A flow whose plan cannot be loaded (its input unreadable, a store gone): FAILED, with
    /// `cause` (already safe to show) in its errors.
    fn fail_unloadable(&mut self, flow_id: i64, cause: String, ctx: &mut Context<Self>) {
        let db = self.db.clone();
        let persister = self.persister.clone();
        let max_lines = self.config.max_log_lines;
        ctx.spawn(
            async move {
                let Ok(Some((_, output))) = repo::get_flow(&db, flow_id).await else {
                    return;
                };
                let Ok(picture) = repo::picture_from_model(output, max_lines) else {
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

    /// Cancels a flow that is not running (waiting in the queue or for a restart).
    fn cancel_idle(&mut self, flow_id: i64) -> ResponseActFuture<Self, CancelOutcome> {
        // A flow recovered or restarted may have staged outputs from an earlier run.
        let discard = discard_staged(self.db.clone(), self.cipher.clone(), self.engine.clone(), flow_id);
        let db = self.db.clone();
        let persister = self.persister.clone();
        let max_lines = self.config.max_log_lines;
        Box::pin(
            async move {
                if persister
                    .send(GetPicture { flow_id })
                    .await
                    .ok()
                    .flatten()
                    .is_none()
                {
                    let Ok(Some((_, output))) = repo::get_flow(&db, flow_id).await else {
                        return CancelOutcome::Unknown;
                    };
                    let Ok(picture) = repo::picture_from_model(output, max_lines) else {
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
                act.restarts.remove(&flow_id);
                act.exclusive.remove(&flow_id);
                act.admit(ctx);
                outcome
            }),
        )
    }
}

/// Removes whatever a flow that will not run again left staged in its target (best effort:
/// a flow whose input or store is gone has nothing to discard that Sluice can reach).
async fn discard_staged(db: DatabaseConnection, cipher: Cipher, engine: Arc<Engine>, flow_id: i64) {
    let plan = async {
        let (flow, _) = repo::get_flow(&db, flow_id).await.ok()??;
        let input = repo::get_flow_input(&db, flow.flow_input_id).await.ok()??;
        let (spec, _) = repo::flow_input_spec(&input).ok()?;
        let model = repo::get_store(&db, spec.target_store_id).await.ok()??;
        let store = repo::store_from_model(model, &cipher).ok()?;
        Some((store, publish::loads(engine.instance(), flow_id, &spec.outputs)))
    };
    if let Some((store, loads)) = plan.await {
        let pools = engine.pools().clone();
        let done = engine
            .handle()
            .spawn(async move { publish::discard(&store, &loads, &pools).await })
            .await;
        if let Ok(Err(e)) = done {
            tracing::warn!(flow_id, error = %e, "could not remove a flow's staged outputs");
        }
    }
}

/// What a FlowActor is started with.
struct Loaded {
    plan: FlowPlan,
    picture: FlowPicture,
    done: HashSet<String>,
    /// Whether the flow ran before (it is being restarted or recovered); a fresh retry is not.
    restarted: bool,
    /// Whether followers must re-read a snapshot (see `Track::resync`).
    resync: bool,
}

/// Loads a flow's plan and picture (the Persister's, if it still tracks the flow, else the
/// stored one) and works out which nodes an earlier run completed.
async fn load_flow(
    db: DatabaseConnection,
    cipher: Cipher,
    engine: Arc<Engine>,
    persister: Addr<Persister>,
    flow_id: i64,
    max_lines: usize,
) -> Result<Option<Loaded>, LoadError> {
    let (flow, output) = repo::get_flow(&db, flow_id)
        .await?
        .ok_or(LoadError::FlowMissing(flow_id))?;
    let input = repo::get_flow_input(&db, flow.flow_input_id)
        .await?
        .ok_or(LoadError::InputMissing(flow.flow_input_id))?;
    let (spec, dag) = repo::flow_input_spec(&input)?;
    let mut ids: Vec<i64> = spec.sources.iter().map(|s| s.store_id).collect();
    ids.push(spec.target_store_id);
    ids.sort_unstable();
    ids.dedup();
    let stores = repo::stores_by_ids(&db, &ids)
        .await?
        .into_iter()
        .map(|m| repo::store_from_model(m, &cipher).map(|s| (s.id, s)))
        .collect::<Result<_, _>>()?;
    let mut picture = match persister.send(GetPicture { flow_id }).await.ok().flatten() {
        Some(p) => p,
        None => repo::picture_from_model(output, max_lines)?,
    };
    if picture.state.is_final() {
        return Ok(None);
    }
    let run = RunPlan::new(&dag);
    // What an earlier run finished: a materialized node with a whole checkpoint, an output
    // staged; reading the work directory, so on a blocking thread.
    let completed: HashSet<String> = picture
        .tasks
        .iter()
        .filter(|t| t.state == TaskState::Completed)
        .map(|t| t.name.clone())
        .collect();
    let work_dir = engine.work_dir(flow_id);
    let units = run.clone();
    // What the cursor sources of an earlier run read (saved beside the checkpoints).
    let cursor_sources: Vec<(String, String)> = spec
        .cursor_sources()
        .map(|(s, column)| (s.name.clone(), column.to_string()))
        .collect();
    let saved: HashMap<String, CursorEntry> = {
        let (dir, names) = (work_dir.clone(), cursor_sources.clone());
        tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .filter_map(|(name, _)| cursor_read::load(&dir, &name).map(|e| (name, e)))
                .collect()
        })
        .await
        .map_err(|e| LoadError::crashed(format!("reading the cursors of flow {flow_id}"), e))?
    };
    let unsaved: HashSet<String> = cursor_sources
        .iter()
        .map(|(name, _)| name.clone())
        .filter(|name| !saved.contains_key(name))
        .collect();
    let done = tokio::task::spawn_blocking(move || {
        units.done_nodes(|u| {
            // A unit that read a cursor source counts as done only once what it read is saved
            // (the save follows the unit's own checkpoint, and nothing reads the unit before).
            if u.nodes().any(|n| unsaved.contains(n)) {
                return false;
            }
            match u.kind {
                // A checkpoint is committed whole once its node is done, whether or not the
                // completion was written before the process stopped.
                UnitKind::Materialize => checkpoint::is_valid(&work_dir, &u.name),
                UnitKind::Persist => {
                    completed.contains(&u.name) || checkpoint::staged(&work_dir, &u.name).is_some()
                }
                UnitKind::Discard | UnitKind::Check => completed.contains(&u.name),
            }
        })
    })
    .await
    .map_err(|e| LoadError::crashed(format!("scanning the checkpoints of flow {flow_id}"), e))?;
    let restarted = picture.started_utc.is_some();
    let resync = picture.resume(&done);
    // Where the cursor sources start: after what the latest completed flow of the input read
    // (nothing for a full refresh). Computed at every start: while this flow has not completed,
    // no other flow of its input completes (they run one at a time).
    let mut cursor_starts = HashMap::new();
    if !cursor_sources.is_empty() {
        let previous = if flow.full_refresh {
            Default::default()
        } else {
            repo::latest_completed_cursors(&db, flow.flow_input_id, flow_id).await?
        };
        let read_files = if flow.full_refresh || cursor_sources.iter().all(|(_, c)| !c.is_empty()) {
            Default::default()
        } else {
            repo::completed_cursor_files(&db, flow.flow_input_id, flow_id).await?
        };
        for (name, column) in &cursor_sources {
            let start = if column.is_empty() {
                // A new_files source: the files any completed flow of the input read.
                CursorStart {
                    files: Some(read_files.get(name).cloned().unwrap_or_default()),
                    ..Default::default()
                }
            } else {
                previous
                    .get(name)
                    .filter(|e| &e.column == column)
                    .map(CursorStart::after)
                    .unwrap_or_default()
            };
            let entry = saved.get(name).cloned().unwrap_or_else(|| start.entry(column));
            picture.cursors.insert(name.clone(), entry);
            cursor_starts.insert(name.clone(), start);
        }
    }
    let plan = FlowPlan {
        flow_id,
        output_id: picture.output_id,
        spec,
        dag,
        run,
        stores,
        cursor_starts,
    };
    Ok(Some(Loaded {
        plan,
        picture,
        done,
        restarted,
        resync,
    }))
}

/// Removes every work directory that no flow needs: a COMPLETED flow's (normally gone
/// already), one of a flow that no longer exists, a retry's staging directory left by a crash, and a FAILED or CANCELLED flow's kept
/// checkpoints once `retention` has passed since it ended or a later flow of the same input
/// has COMPLETED (a retry then has nothing to gain over a plain flow). READY and RUNNING
/// flows keep theirs. Best effort: what fails is logged and tried again at the next sweep.
async fn sweep_work_dirs(db: DatabaseConnection, engine: Arc<Engine>, retention: Duration) {
    let leftovers = engine.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for dir in leftovers.stale_retry_staging(STALE_RETRY_STAGING) {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot remove a retry's leftover checkpoints");
            }
        }
    })
    .await;
    let lister = engine.clone();
    let ids = match tokio::task::spawn_blocking(move || lister.flows_with_work_dirs()).await {
        Ok(Ok(ids)) => ids,
        Ok(Err(e)) => return tracing::warn!(error = %e, "cannot list the work directories"),
        Err(e) => return tracing::warn!(error = %e, "cannot list the work directories"),
    };
    if ids.is_empty() {
        return;
    }
    let flows: HashMap<i64, (i64, FlowState, chrono::DateTime<chrono::Utc>)> =
        match repo::flows_by_ids(&db, &ids).await {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|(f, o)| {
                    let state = FlowState::parse(&o.state)?;
                    Some((
                        f.id,
                        (f.flow_input_id, state, o.finished_utc.unwrap_or(o.updated_utc)),
                    ))
                })
                .collect(),
            Err(e) => return tracing::warn!(error = %e, "cannot sweep the work directories"),
        };
    let mut inputs: Vec<i64> = flows.values().map(|(input, _, _)| *input).collect();
    inputs.sort_unstable();
    inputs.dedup();
    let latest = match repo::latest_completed_flows(&db, &inputs).await {
        Ok(latest) => latest,
        Err(e) => return tracing::warn!(error = %e, "cannot sweep the work directories"),
    };
    let now = chrono::Utc::now();
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let stale: Vec<i64> = ids
        .into_iter()
        .filter(|id| match flows.get(id) {
            None => true,
            Some((_, FlowState::Ready | FlowState::Running, _)) => false,
            Some((_, FlowState::Completed, _)) => true,
            Some((input, _, ended)) => {
                now.signed_duration_since(*ended) >= retention
                    || latest.get(input).is_some_and(|completed| completed > id)
            }
        })
        .collect();
    if stale.is_empty() {
        return;
    }
    let remove = engine.clone();
    let removed = tokio::task::spawn_blocking(move || {
        for id in stale {
            let dir = remove.work_dir(id);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::debug!(flow_id = id, "removed the work directory"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(flow_id = id, error = %e, "cannot remove the work directory"),
            }
        }
    })
    .await;
    if let Err(e) = removed {
        tracing::warn!(error = %e, "sweeping the work directories crashed");
    }
}

/// Age after which a retry's staging directory is a leftover (a retry moves it into place
/// within a request).
const STALE_RETRY_STAGING: Duration = Duration::from_secs(3600);

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
        if let Some(input) = msg.exclusive_input {
            self.exclusive.insert(msg.flow_id, input);
        }
        if !self.queue.contains(&msg.flow_id)
            && !self.registry.contains_key(&msg.flow_id)
            && self.starting != Some(msg.flow_id)
        {
            self.queue.push_back(msg.flow_id);
        }
        self.admit(ctx);
    }
}

impl Handler<CancelFlow> for FlowSupervisor {
    type Result = ResponseActFuture<Self, CancelOutcome>;

    fn handle(&mut self, msg: CancelFlow, _: &mut Self::Context) -> Self::Result {
        let flow_id = msg.flow_id;
        if let Some(pos) = self.queue.iter().position(|id| *id == flow_id) {
            self.queue.remove(pos);
            return self.cancel_idle(flow_id);
        }
        if self.restarting.remove(&flow_id).is_some() {
            return self.cancel_idle(flow_id);
        }
        if self.starting == Some(flow_id) {
            self.cancel_on_start.insert(flow_id);
            return Box::pin(actix::fut::ready(CancelOutcome::Sent));
        }
        if let Some(actor) = self.registry.get(&flow_id).map(|a| a.clone()) {
            return Box::pin(
                actor
                    .send(Cancel)
                    .into_actor(self)
                    .map(|reply, _, _| match reply {
                        Ok(Ok(())) => CancelOutcome::Sent,
                        Ok(Err(state)) if state.is_final() => CancelOutcome::AlreadyFinal(state),
                        _ => CancelOutcome::Unknown,
                    }),
            );
        }
        Box::pin(actix::fut::ready(CancelOutcome::Unknown))
    }
}

impl Handler<FlowEnded> for FlowSupervisor {
    type Result = ();

    fn handle(&mut self, msg: FlowEnded, ctx: &mut Self::Context) {
        self.registry.remove(&msg.flow_id);
        self.restarts.remove(&msg.flow_id);
        if msg.state.is_final() {
            self.exclusive.remove(&msg.flow_id);
        }
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
        if self.registry.remove(&flow_id).is_none() && self.starting != Some(flow_id) {
            // A second report of the same crash (the actor's drop guard).
            if self.restarting.contains_key(&flow_id) {
                return;
            }
        }
        // The service log gets the whole cause; the flow's lines only what they may show.
        let logged = crate::secrets::redact_urls(msg.cause.log_text());
        let cause = crate::secrets::redact_urls(&msg.cause.public_text(flow_id));
        let restart = self.restarts.get(&flow_id).copied().unwrap_or(0) + 1;
        let max = self.config.max_restarts;
        if restart <= max && !self.parked {
            let delay = restart_delay(restart);
            tracing::warn!(flow_id, attempt = restart, max_restarts = max, cause = %logged, delay_ms = delay.as_millis() as u64, "flow crashed; restarting from its checkpoints");
            self.record(
                flow_id,
                FlowEvent::Crashed {
                    restart,
                    max_restarts: max,
                    cause,
                    retry_in: Some(delay),
                },
            );
            self.restarts.insert(flow_id, restart);
            self.restarting.insert(flow_id, restart);
            ctx.run_later(delay, move |act, ctx| {
                if act.restarting.remove(&flow_id).is_some() {
                    tracing::warn!(flow_id, attempt = restart, "restarting flow");
                    act.queue.push_front(flow_id);
                    act.admit(ctx);
                }
            });
        } else {
            tracing::warn!(flow_id, restarts = restart - 1, cause = %logged, "flow crashed too often; failing it");
            self.record(
                flow_id,
                FlowEvent::Crashed {
                    restart,
                    max_restarts: max,
                    cause,
                    retry_in: None,
                },
            );
            self.restarts.remove(&flow_id);
            let persister = self.persister.clone();
            let discard = discard_staged(self.db.clone(), self.cipher.clone(), self.engine.clone(), flow_id);
            ctx.spawn(
                async move {
                    discard.await;
                    let _ = persister
                        .send(Transition {
                            flow_id,
                            state: FlowState::Failed,
                        })
                        .await;
                }
                .into_actor(self)
                .map(move |_, act, ctx| {
                    act.exclusive.remove(&flow_id);
                    act.admit(ctx);
                    act.sweep(ctx);
                }),
            );
        }
        self.admit(ctx);
    }
}

impl Handler<Recover> for FlowSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Recover, _: &mut Self::Context) -> Self::Result {
        let db = self.db.clone();
        Box::pin(
            async move {
                let flows = repo::unfinished_flows(&db).await?;
                // Which of them belong to incremental inputs (one input's spec read once).
                let mut incremental: HashMap<i64, bool> = HashMap::new();
                for (flow, _) in &flows {
                    if incremental.contains_key(&flow.flow_input_id) {
                        continue;
                    }
                    let is = match repo::get_flow_input(&db, flow.flow_input_id).await? {
                        Some(input) => {
                            repo::flow_input_spec(&input).is_ok_and(|(spec, _)| spec.is_incremental())
                        }
                        None => false,
                    };
                    incremental.insert(flow.flow_input_id, is);
                }
                Ok::<_, RepoError>((flows, incremental))
            }
            .into_actor(self)
            .map(|found, act, ctx| match found {
                Ok((flows, incremental)) => {
                    for (flow, output) in flows {
                        if incremental.get(&flow.flow_input_id).copied().unwrap_or(false) {
                            act.exclusive.insert(flow.id, flow.flow_input_id);
                        }
                        if output.state == FlowState::Running.as_str() {
                            act.recovered.insert(flow.id);
                        }
                        if !act.queue.contains(&flow.id) {
                            act.queue.push_back(flow.id);
                        }
                    }
                    if !act.queue.is_empty() {
                        tracing::info!(flows = act.queue.len(), "recovering unfinished flows");
                    }
                    act.admit(ctx);
                    act.sweep(ctx);
                }
                Err(e) => tracing::error!(error = %e, "cannot list unfinished flows"),
            }),
        )
    }
}

impl Handler<Park> for FlowSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Park, _: &mut Self::Context) -> Self::Result {
        self.parked = true;
        tracing::info!(
            running = self.registry.len(),
            waiting = self.queue.len(),
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
