//! `GET /flows/{id}/events`: a flow's live story as Server-Sent Events. First a `snapshot`
//! (the flow as `GET /flows/{id}` shows it), then `state`, `progress`, `task`, `check`, `log` and `error`
//! events as the Persister applies them, keep-alive comments while nothing happens, and after
//! the final state an `end` event; then the stream closes.
//!
//! A flow that another instance runs (PostgreSQL metadata, several instances) is followed from
//! the database: the stream re-reads it as often as its owner writes it and sends what changed,
//! as the same events.
//!
//! Progress is coalesced: at most one `progress` event per `PROGRESS_EVERY`, the latest one
//! (so at least one every `PROGRESS_EVERY` while rows move). A follower that cannot keep up
//! (its connection is slow, its buffer fills) never slows the flow: the hub drops what it could
//! not take, and the follower gets a fresh `snapshot` instead.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use super::dto::FlowView;
use crate::domain::flow::{FlowPicture, FlowState};
use crate::error::AppError;
use crate::events::{EventHub, FlowUpdate, Mark, ProgressUpdate, Sequenced};
use crate::metrics::Metrics;
use crate::services::flows::FlowRecord;
use crate::services::Services;

/// Coalescing window of progress events.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// A comment line after this long without any other output, so proxies keep the stream open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// After this long without any update, the stream re-reads the flow's state (a flow waiting in
/// the queue, or a final state published just before this follower subscribed).
const RECHECK: Duration = Duration::from_secs(2);

/// Every event the stream sends, with the schema of its JSON `data` (keep-alive comments are
/// not events).
pub const EVENTS: &[(&str, &str)] = &[
    ("snapshot", "FlowView"),
    ("state", "StateUpdate"),
    ("progress", "ProgressUpdate"),
    ("task", "TaskStatus"),
    ("check", "CheckStatus"),
    ("log", "LineUpdate"),
    ("error", "LineUpdate"),
    ("end", "StreamEnd"),
];

/// The `data` of the `end` event, after which the stream closes.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StreamEnd {
    /// The flow's final state.
    pub state: FlowState,
}

/// The schema of one event of the stream, for the OpenAPI document: its name and its `data`,
/// which is JSON of the schema `EVENTS` gives for that name.
pub fn event_schema() -> serde_json::Value {
    let names: Vec<&str> = EVENTS.iter().map(|(name, _)| *name).collect();
    let variants: Vec<serde_json::Value> = EVENTS
        .iter()
        .map(|(name, schema)| {
            json!({"properties": {
                "event": {"const": name},
                "data": {
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": format!("#/components/schemas/{schema}")},
                },
            }})
        })
        .collect();
    json!({
        "description": "One Server-Sent Event: its name, and its data as JSON",
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": names},
            "data": {"type": "string"},
        },
        "oneOf": variants,
    })
}

#[utoipa::path(
    get,
    path = "/api/v1.0/flows/{id}/events",
    operation_id = "follow_flow",
    tag = "flows",
    params(("id" = i64, Path, minimum = 1, description = "Flow id")),
    responses(
        (status = 200, description = "Server-Sent Events: `snapshot` (a Flow), then `state`, `progress`, \
            `task`, `check`, `log`, `error` (JSON payloads), `: keep-alive` comments, and `end` after the final state; \
            the schema describes one event",
            content_type = "text/event-stream", body = String),
        (status = 404, description = "Unknown flow", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn events(services: web::Data<Services>, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let flow_id = id.into_inner();
    // Subscribe before reading the snapshot, so no update falls in between.
    let rx = services.events.subscribe(flow_id);
    let mut follower = Follower::new(services.into_inner(), flow_id, rx);
    let (snapshot, seq) = follower.services.flow_snapshot(flow_id).await?;
    follower.push_snapshot(snapshot, seq);
    let body = futures::stream::unfold(follower, |mut f| async move {
        f.next().await.map(|chunk| (Ok::<_, Infallible>(chunk), f))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// One SSE event as bytes.
fn frame(event: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// One follower's stream state. Dropping it (the client went away) unsubscribes.
struct Follower {
    services: Arc<Services>,
    flow_id: i64,
    rx: Option<broadcast::Receiver<Sequenced>>,
    /// Updates numbered up to this are already in the last snapshot.
    shown: Option<u64>,
    /// Frames ready to go out.
    out: VecDeque<Bytes>,
    /// The latest progress not yet sent.
    pending: Option<ProgressUpdate>,
    last_progress: Option<Instant>,
    last_write: Instant,
    last_update: Instant,
    state: Option<FlowState>,
    ended: bool,
    /// The flow runs elsewhere (another instance): its picture as last read from the database,
    /// when to read it again, and the hub's number for the flow when this began (an update
    /// since means the flow runs here now, and the hub has every update of it).
    remote: Option<(FlowPicture, Instant, u64)>,
    hub: Arc<EventHub>,
    metrics: Arc<Metrics>,
}

impl Follower {
    fn new(services: Arc<Services>, flow_id: i64, rx: broadcast::Receiver<Sequenced>) -> Self {
        let now = Instant::now();
        services.metrics.event_followers.inc();
        Follower {
            hub: services.events.clone(),
            metrics: services.metrics.clone(),
            services,
            flow_id,
            rx: Some(rx),
            shown: None,
            out: VecDeque::new(),
            pending: None,
            last_progress: None,
            last_write: now,
            last_update: now,
            state: None,
            ended: false,
            remote: None,
        }
    }

    fn push(&mut self, event: &str, data: serde_json::Value) {
        self.out.push_back(frame(event, &data));
    }

    fn push_snapshot(&mut self, record: FlowRecord, shown: Option<u64>) {
        // Read from the database while flows may run elsewhere: it is followed from there
        // until this instance's Persister holds it (then its updates come through the hub).
        self.remote = (shown.is_none()
            && self.services.flows_run_elsewhere()
            && !record.output.state.is_final())
        .then(|| {
            (
                record.output.clone(),
                Instant::now() + self.services.remote_poll_interval(),
                self.hub.seq(self.flow_id),
            )
        });
        let view = FlowView::from(record);
        let state = view.output.state;
        self.pending = None;
        self.shown = shown;
        self.state = Some(state);
        self.push("snapshot", serde_json::to_value(&view).unwrap_or_default());
        if state.is_final() {
            self.push_end(state);
        }
    }

    fn push_end(&mut self, state: FlowState) {
        self.push(
            "end",
            serde_json::to_value(StreamEnd { state }).unwrap_or_default(),
        );
        self.ended = true;
    }

    fn flush_progress(&mut self) {
        if let Some(p) = self.pending.take() {
            self.push("progress", serde_json::to_value(&p).unwrap_or_default());
            self.last_progress = Some(Instant::now());
        }
    }

    /// Re-reads the flow and sends it as a snapshot. With `resubscribe`, updates still
    /// buffered are dropped first (they are older than the snapshot).
    async fn resync(&mut self, resubscribe: bool) {
        if resubscribe {
            self.rx = Some(self.hub.subscribe(self.flow_id));
        }
        match self.services.flow_snapshot(self.flow_id).await {
            Ok((record, seq)) => self.push_snapshot(record, seq),
            Err(e) => {
                tracing::warn!(flow_id = self.flow_id, error = %e, "event stream cannot read the flow; closing it");
                self.ended = true;
            }
        }
    }

    fn apply(&mut self, update: FlowUpdate) {
        match update {
            FlowUpdate::Progress(p) => self.pending = Some(p),
            FlowUpdate::State(s) => {
                self.flush_progress();
                self.state = Some(s.state);
                self.push("state", serde_json::to_value(&s).unwrap_or_default());
                if s.state.is_final() {
                    self.push_end(s.state);
                }
            }
            FlowUpdate::Resync => {} // handled by the caller
            other => {
                let name = other.name();
                self.push(name, other.payload());
            }
        }
    }

    /// Re-reads a flow run elsewhere and sends what changed since the last read. Once this
    /// instance runs the flow, its updates come from the hub instead: the hub holds every one
    /// of them (this follower subscribed before its first snapshot), and what the database
    /// shows of them was published there before it was written, so nothing is sent twice.
    async fn poll_remote(&mut self) {
        let Some((before, _, base)) = self.remote.take() else {
            return;
        };
        match self.services.flow_snapshot(self.flow_id).await {
            Ok((_, Some(_))) => {}                            // it runs here now
            Ok(_) if self.hub.seq(self.flow_id) != base => {} // it runs here now
            Ok((record, None)) => {
                let now = record.output;
                for update in Mark::of(&before).changes(&now) {
                    self.apply(update);
                }
                if !now.state.is_final() {
                    let next = Instant::now() + self.services.remote_poll_interval();
                    self.remote = Some((now, next, base));
                }
            }
            Err(e) => {
                tracing::warn!(flow_id = self.flow_id, error = %e, "event stream cannot read the flow; closing it");
                self.ended = true;
            }
        }
    }

    /// The next chunk of the stream; `None` ends it.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.out.pop_front() {
                self.last_write = Instant::now();
                return Some(chunk);
            }
            if self.ended {
                return None;
            }
            let progress_at = self
                .last_progress
                .map(|t| t + PROGRESS_EVERY)
                .unwrap_or_else(Instant::now);
            let poll_at = self.remote.as_ref().map(|(_, at, _)| *at);
            let rx = self.rx.as_mut()?;
            tokio::select! {
                received = rx.recv() => {
                    self.last_update = Instant::now();
                    // Followed from the database until now: the flow runs here now.
                    self.remote = None;
                    match received {
                        Ok((seq, _)) if self.shown.is_some_and(|shown| seq <= shown) => {}
                        Ok((_, FlowUpdate::Resync)) => self.resync(false).await,
                        Ok((_, update)) => self.apply(update),
                        Err(RecvError::Lagged(missed)) => {
                            tracing::debug!(flow_id = self.flow_id, missed, "event follower lagged; resending a snapshot");
                            self.resync(true).await;
                        }
                        Err(RecvError::Closed) => {
                            // Closed after a final state this follower already saw, or a race
                            // with it: the stored flow says which.
                            self.resync(true).await;
                        }
                    }
                }
                _ = tokio::time::sleep_until(progress_at), if self.pending.is_some() => self.flush_progress(),
                _ = tokio::time::sleep_until(poll_at.unwrap_or(progress_at)), if poll_at.is_some() => {
                    self.last_update = Instant::now();
                    self.poll_remote().await;
                }
                _ = tokio::time::sleep_until(self.last_update + RECHECK) => {
                    self.last_update = Instant::now();
                    if let Ok((record, seq)) = self.services.flow_snapshot(self.flow_id).await {
                        if Some(record.output.state) != self.state {
                            self.flush_progress();
                            self.push_snapshot(record, seq);
                        }
                    }
                }
                _ = tokio::time::sleep_until(self.last_write + KEEP_ALIVE) => {
                    self.out.push_back(Bytes::from_static(b": keep-alive\n\n"));
                }
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        // Our receiver must be gone before the hub checks whether anyone still listens.
        self.rx = None;
        self.hub.release(self.flow_id);
        self.metrics.event_followers.dec();
    }
}
