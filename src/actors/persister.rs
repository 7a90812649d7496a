//! The Persister: the single writer of flow outputs. It keeps each running flow's picture,
//! applies events to it, and writes coalesced: dirty pictures every `persist_interval`, a state
//! change at once, and a final state before it replies (so it is durable before anyone is told
//! the flow ended). Writes go through one writer task, in order. It also publishes what each
//! event changed to the flow's live followers (`events::EventHub`; a final state only once it
//! is written) and counts task metrics. What is coalesced and what readers see is kept by
//! `pictures::Pictures`; this actor does the writing and the publishing.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};

use super::messages::{
    FlushAll, GetLive, GetPicture, LiveStates, Record, RowsMoved, Track, Transition, Untrack,
};
use super::pictures::{Applied, Pictures, Transitioned};
use crate::domain::flow::{FlowPicture, FlowState};
use crate::domain::time;
use crate::events::{EventHub, FlowUpdate, Mark};
use crate::metrics::Metrics;
use crate::repo;

struct WriteJob {
    pictures: Vec<FlowPicture>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

pub struct Persister {
    db: DatabaseConnection,
    interval: Duration,
    /// With several instances: this instance's id. Only the flows it holds the lease of are
    /// written (see `repo::save_pictures`).
    owner: Option<String>,
    pictures: Pictures,
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
            owner: None,
            pictures: Pictures::default(),
            writer: None,
            events: Arc::new(EventHub::new()),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Writes only the flows instance `owner` holds (several instances on one database).
    pub fn fenced(mut self, owner: Option<String>) -> Self {
        self.owner = owner;
        self
    }

    /// Publishes to `events` and counts into `metrics` (by default, into ones nobody reads).
    pub fn observed(mut self, events: Arc<EventHub>, metrics: Arc<Metrics>) -> Self {
        self.events = events;
        self.metrics = metrics;
        self
    }

    /// Queues a write of `pictures`; `done` hears when it (and every write queued before it)
    /// has ended, so even an empty write with `done` waits for those before it.
    fn send(&self, pictures: Vec<FlowPicture>, done: Option<oneshot::Sender<Result<(), String>>>) {
        if pictures.is_empty() && done.is_none() {
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
        let dirty = self.pictures.take_dirty();
        self.send(dirty, None);
    }
}

/// Writes jobs one after another; a failed write is retried a few times before it is reported.
async fn writer_loop(
    db: DatabaseConnection,
    owner: Option<String>,
    mut jobs: mpsc::UnboundedReceiver<WriteJob>,
    metrics: Arc<Metrics>,
) {
    while let Some(job) = jobs.recv().await {
        if job.pictures.is_empty() {
            // A flush waiting for the writes before it (all done now).
            if let Some(done) = job.done {
                let _ = done.send(Ok(()));
            }
            continue;
        }
        let count = job.pictures.len();
        let mut result = Err(String::new());
        for attempt in 0..4u32 {
            let started = std::time::Instant::now();
            match repo::save_pictures(&db, job.pictures.clone(), owner.as_deref()).await {
                Ok(skipped) if !skipped.is_empty() => {
                    // Flows another instance took over: what this one says of them is stale.
                    tracing::warn!(outputs = ?skipped, "not writing the flow outputs of flows another instance now holds");
                    result = Err("another instance holds the flow's lease".into());
                    break;
                }
                Ok(_) => {
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
        actix_rt::spawn(writer_loop(
            self.db.clone(),
            self.owner.clone(),
            rx,
            self.metrics.clone(),
        ));
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
        self.pictures.track(msg.flow_id, msg.picture);
        if msg.resync {
            self.events.publish(msg.flow_id, FlowUpdate::Resync);
        }
    }
}

impl Handler<Untrack> for Persister {
    type Result = ();

    fn handle(&mut self, msg: Untrack, _: &mut Self::Context) {
        self.pictures.untrack(msg.flow_id);
    }
}

impl Handler<Record> for Persister {
    type Result = ();

    fn handle(&mut self, msg: Record, _: &mut Self::Context) {
        let Some(before) = self.pictures.current(msg.flow_id) else {
            tracing::debug!(flow_id = msg.flow_id, event = ?msg.event, "event for an untracked flow dropped");
            return;
        };
        self.metrics.observe(before, &msg.event);
        let mark = self.events.is_followed(msg.flow_id).then(|| Mark::of(before));
        let applied = self.pictures.apply(msg.flow_id, &msg.event, time::now());
        if let (Some(mark), Some(after)) = (mark, self.pictures.current(msg.flow_id)) {
            for update in mark.changes(after) {
                self.events.publish(msg.flow_id, update);
            }
        }
        if let Applied::WriteNow(picture) = applied {
            self.send(vec![*picture], None);
        }
    }
}

impl Handler<Transition> for Persister {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, msg: Transition, _: &mut Self::Context) -> Self::Result {
        let flow_id = msg.flow_id;
        let Some(Transitioned {
            picture,
            is_final,
            mark,
        }) = self.pictures.transition(flow_id, msg.state, time::now())
        else {
            return Box::pin(
                async move { Err(format!("flow {flow_id} is not tracked by the persister")) }
                    .into_actor(self),
            );
        };
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
                if written.is_ok() {
                    for update in deferred {
                        match update {
                            FlowUpdate::State(s) if s.state.is_final() => {
                                act.events.publish_final(flow_id, FlowUpdate::State(s))
                            }
                            update => act.events.publish(flow_id, update),
                        }
                    }
                }
                // Durable: readers get the flow from the database from now on. Not durable:
                // they keep seeing the state before it.
                act.pictures.final_written(flow_id, written.is_ok());
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
        self.pictures.visible(msg.flow_id).cloned()
    }
}

impl Handler<LiveStates> for Persister {
    type Result = Vec<(i64, FlowState)>;

    fn handle(&mut self, _: LiveStates, _: &mut Self::Context) -> Self::Result {
        self.pictures.visible_states()
    }
}

impl Handler<GetLive> for Persister {
    type Result = Option<(FlowPicture, u64)>;

    fn handle(&mut self, msg: GetLive, _: &mut Self::Context) -> Self::Result {
        // Updates are published while events are applied, in this actor: the picture shows
        // every update numbered up to the channel's current number.
        self.pictures
            .visible(msg.flow_id)
            .map(|p| (p.clone(), self.events.seq(msg.flow_id)))
    }
}

impl Handler<FlushAll> for Persister {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushAll, _: &mut Self::Context) -> Self::Result {
        let dirty = self.pictures.take_dirty();
        let (tx, rx) = oneshot::channel();
        self.send(dirty, Some(tx));
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
