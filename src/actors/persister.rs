//! The Persister: the single writer of flow outputs. It keeps each running flow's picture,
//! applies events to it, and writes coalesced: dirty pictures every `persist_interval`, a state
//! change at once, and a final state before it replies (so it is durable before anyone is told
//! the flow ended). Writes go through one writer task, in order. It also publishes what each
//! event changed to the flow's live followers (`events::EventHub`; a final state only once it
//! is written) and counts task metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};

use super::messages::{FlushAll, GetLive, GetPicture, LiveStates, Record, RowsMoved, Track, Transition};
use crate::domain::flow::{FlowEvent, FlowPicture, FlowState};
use crate::domain::time;
use crate::events::{EventHub, FlowUpdate, Mark};
use crate::metrics::Metrics;
use crate::repo;

struct Entry {
    picture: FlowPicture,
    /// Changed since the last write.
    dirty: bool,
    /// While a final state is being written: the picture as it was before, which readers still
    /// get — a final state is told to nobody before it is durable.
    shown: Option<FlowPicture>,
}

impl Entry {
    /// What readers see now.
    fn visible(&self) -> &FlowPicture {
        self.shown.as_ref().unwrap_or(&self.picture)
    }
}

struct WriteJob {
    pictures: Vec<FlowPicture>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

pub struct Persister {
    db: DatabaseConnection,
    interval: Duration,
    pictures: HashMap<i64, Entry>,
    writer: Option<mpsc::UnboundedSender<WriteJob>>,
    /// Live followers of flows.
    events: Arc<EventHub>,
    metrics: Arc<Metrics>,
}

impl Persister {
    pub fn new(db: DatabaseConnection, interval: Duration) -> Self {
        Persister {
            db,
            interval,
            pictures: HashMap::new(),
            writer: None,
            events: Arc::new(EventHub::new()),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Publishes to `events` and counts into `metrics` (by default, into ones nobody reads).
    pub fn observed(mut self, events: Arc<EventHub>, metrics: Arc<Metrics>) -> Self {
        self.events = events;
        self.metrics = metrics;
        self
    }

    fn send(&self, pictures: Vec<FlowPicture>, done: Option<oneshot::Sender<Result<(), String>>>) {
        if pictures.is_empty() {
            if let Some(done) = done {
                let _ = done.send(Ok(()));
            }
            return;
        }
        match &self.writer {
            Some(w) => {
                if let Err(mpsc::error::SendError(job)) = w.send(WriteJob { pictures, done }) {
                    if let Some(done) = job.done {
                        let _ = done.send(Err("the persister's writer has stopped".into()));
                    }
                }
            }
            None => {
                if let Some(done) = done {
                    let _ = done.send(Err("the persister is not started".into()));
                }
            }
        }
    }

    /// Queues a write of every dirty picture.
    fn flush_dirty(&mut self) {
        let dirty: Vec<FlowPicture> = self
            .pictures
            .values_mut()
            .filter(|e| e.dirty)
            .map(|e| {
                e.dirty = false;
                e.picture.clone()
            })
            .collect();
        self.send(dirty, None);
    }
}

/// Writes jobs one after another; a failed write is retried a few times before it is reported.
async fn writer_loop(
    db: DatabaseConnection,
    mut jobs: mpsc::UnboundedReceiver<WriteJob>,
    metrics: Arc<Metrics>,
) {
    while let Some(job) = jobs.recv().await {
        let count = job.pictures.len();
        let mut result = Err(String::new());
        for attempt in 0..4u32 {
            let started = std::time::Instant::now();
            match repo::save_pictures(&db, job.pictures.clone()).await {
                Ok(()) => {
                    metrics.persisted(count, started.elapsed());
                    tracing::trace!(
                        count,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "persisted flow outputs"
                    );
                    result = Ok(());
                    break;
                }
                Err(e) => {
                    tracing::warn!(count, attempt, error = %e, "writing flow outputs failed");
                    result = Err(e.to_string());
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
            }
        }
        if let Some(done) = job.done {
            let _ = done.send(result);
        }
    }
}

impl Actor for Persister {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.writer = Some(tx);
        actix_rt::spawn(writer_loop(self.db.clone(), rx, self.metrics.clone()));
        ctx.run_interval(self.interval, |act, _| act.flush_dirty());
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.flush_dirty();
        Running::Stop
    }
}

impl Handler<Track> for Persister {
    type Result = ();

    fn handle(&mut self, msg: Track, _: &mut Self::Context) {
        self.pictures.insert(
            msg.flow_id,
            Entry {
                picture: msg.picture,
                dirty: false,
                shown: None,
            },
        );
        if msg.resync {
            self.events.publish(msg.flow_id, FlowUpdate::Resync);
        }
    }
}

impl Handler<Record> for Persister {
    type Result = ();

    fn handle(&mut self, msg: Record, _: &mut Self::Context) {
        let Some(entry) = self.pictures.get_mut(&msg.flow_id) else {
            tracing::debug!(flow_id = msg.flow_id, event = ?msg.event, "event for an untracked flow dropped");
            return;
        };
        self.metrics.observe(&entry.picture, &msg.event);
        let mark = self
            .events
            .is_followed(msg.flow_id)
            .then(|| Mark::of(&entry.picture));
        let state_changed = entry.picture.apply(&msg.event, time::now());
        if let Some(mark) = mark {
            for update in mark.changes(&entry.picture) {
                self.events.publish(msg.flow_id, update);
            }
        }
        entry.dirty = true;
        if state_changed {
            entry.dirty = false;
            let picture = entry.picture.clone();
            self.send(vec![picture], None);
        }
    }
}

impl Handler<Transition> for Persister {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, msg: Transition, _: &mut Self::Context) -> Self::Result {
        let Some(entry) = self.pictures.get_mut(&msg.flow_id) else {
            let flow_id = msg.flow_id;
            return Box::pin(
                async move { Err(format!("flow {flow_id} is not tracked by the persister")) }
                    .into_actor(self),
            );
        };
        let mark = Mark::of(&entry.picture);
        let is_final = msg.state.is_final() && !entry.picture.state.is_final();
        if is_final {
            entry.shown = Some(entry.picture.clone());
        }
        entry.picture.apply(&FlowEvent::State(msg.state), time::now());
        entry.dirty = false;
        let picture = entry.picture.clone();
        // A state other than a final one is published at once; a final one, and everything it
        // changed, once it is durable.
        let updates = mark.changes(&picture);
        let deferred = if is_final {
            updates
        } else {
            for update in updates {
                self.events.publish(msg.flow_id, update);
            }
            Vec::new()
        };
        let (tx, rx) = oneshot::channel();
        self.send(vec![picture], Some(tx));
        let flow_id = msg.flow_id;
        Box::pin(
            async move {
                rx.await
                    .unwrap_or_else(|_| Err("the persister's writer has stopped".into()))
            }
            .into_actor(self)
            .map(move |written, act, _| {
                if !is_final {
                    return written;
                }
                match &written {
                    Ok(()) => {
                        for update in deferred {
                            match update {
                                FlowUpdate::State(s) if s.state.is_final() => {
                                    act.events.publish_final(flow_id, FlowUpdate::State(s))
                                }
                                update => act.events.publish(flow_id, update),
                            }
                        }
                        // A final picture leaves memory once it is stored: readers get it from
                        // the database from now on.
                        act.pictures.remove(&flow_id);
                    }
                    Err(_) => {
                        // Not durable: readers keep seeing the state before it.
                        if let Some(entry) = act.pictures.get_mut(&flow_id) {
                            if let Some(shown) = entry.shown.take() {
                                entry.picture = shown;
                            }
                        }
                    }
                }
                written
            }),
        )
    }
}

impl Handler<RowsMoved> for Persister {
    type Result = ();

    fn handle(&mut self, msg: RowsMoved, _: &mut Self::Context) {
        self.metrics.rows_moved(msg.engine, msg.direction, msg.rows);
        if let Some((flow_input, source)) = &msg.source {
            self.metrics.source_rows_read(flow_input, source, msg.rows);
        }
    }
}

impl Handler<GetPicture> for Persister {
    type Result = Option<FlowPicture>;

    fn handle(&mut self, msg: GetPicture, _: &mut Self::Context) -> Self::Result {
        self.pictures.get(&msg.flow_id).map(|e| e.visible().clone())
    }
}

impl Handler<LiveStates> for Persister {
    type Result = Vec<(i64, FlowState)>;

    fn handle(&mut self, _: LiveStates, _: &mut Self::Context) -> Self::Result {
        self.pictures
            .iter()
            .map(|(id, e)| (*id, e.visible().state))
            .collect()
    }
}

impl Handler<GetLive> for Persister {
    type Result = Option<(FlowPicture, u64)>;

    fn handle(&mut self, msg: GetLive, _: &mut Self::Context) -> Self::Result {
        // Updates are published while events are applied, in this actor: the picture shows
        // every update numbered up to the channel's current number.
        self.pictures
            .get(&msg.flow_id)
            .map(|e| (e.visible().clone(), self.events.seq(msg.flow_id)))
    }
}

impl Handler<FlushAll> for Persister {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushAll, _: &mut Self::Context) -> Self::Result {
        let dirty: Vec<FlowPicture> = self
            .pictures
            .values_mut()
            .filter(|e| e.dirty)
            .map(|e| {
                e.dirty = false;
                e.picture.clone()
            })
            .collect();
        let (tx, rx) = oneshot::channel();
        self.send(dirty, Some(tx));
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
