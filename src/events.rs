//! The live-event hub: one broadcast channel per flow that somebody follows. The Persister
//! publishes what each applied event changed in the flow's picture (`FlowUpdate`s); followers
//! (the SSE endpoint) subscribe. Publishing never waits: a follower that falls behind loses
//! updates (its receiver reports `Lagged`) and re-reads a snapshot instead, so no follower can
//! slow a flow down. Channels exist only while someone listens; a flow's channel is closed once
//! its final state has been published.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::domain::flow::{CheckStatus, FlowPicture, FlowState, TaskState, TaskStatus};
use crate::domain::time::rfc3339;

/// Updates buffered per follower before it lags.
const CHANNEL_CAPACITY: usize = 512;

/// One change to a flow, as followers see it.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowUpdate {
    /// The picture was replaced (the flow was (re)started or recovered): read a fresh snapshot.
    Resync,
    State(StateUpdate),
    Progress(ProgressUpdate),
    /// A task changed (other than its row count while it runs, which is progress).
    Task(TaskStatus),
    /// A check changed (started, finished, skipped).
    Check(CheckStatus),
    Log(LineUpdate),
    Error(LineUpdate),
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StateUpdate {
    pub state: FlowState,
    pub percent: f64,
    #[serde(with = "rfc3339")]
    pub updated_utc: DateTime<Utc>,
    #[serde(with = "rfc3339::option")]
    pub started_utc: Option<DateTime<Utc>>,
    #[serde(with = "rfc3339::option")]
    pub finished_utc: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProgressUpdate {
    pub percent: f64,
    #[serde(with = "rfc3339")]
    pub updated_utc: DateTime<Utc>,
    /// The rows of every running task.
    pub tasks: Vec<TaskRows>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TaskRows {
    pub name: String,
    pub rows: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LineUpdate {
    pub line: String,
}

impl FlowUpdate {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            FlowUpdate::Resync => "snapshot",
            FlowUpdate::State(_) => "state",
            FlowUpdate::Progress(_) => "progress",
            FlowUpdate::Task(_) => "task",
            FlowUpdate::Check(_) => "check",
            FlowUpdate::Log(_) => "log",
            FlowUpdate::Error(_) => "error",
        }
    }

    /// The JSON payload (`null` for `Resync`).
    pub fn payload(&self) -> serde_json::Value {
        let value = match self {
            FlowUpdate::Resync => Ok(serde_json::Value::Null),
            FlowUpdate::State(s) => serde_json::to_value(s),
            FlowUpdate::Progress(p) => serde_json::to_value(p),
            FlowUpdate::Task(t) => serde_json::to_value(t),
            FlowUpdate::Check(c) => serde_json::to_value(c),
            FlowUpdate::Log(l) | FlowUpdate::Error(l) => serde_json::to_value(l),
        };
        value.unwrap_or(serde_json::Value::Null)
    }
}

/// What a picture looked like before an event, to tell what the event changed.
pub struct Mark {
    state: FlowState,
    percent: f64,
    logs_total: u64,
    errors_total: u64,
    tasks: Vec<TaskStatus>,
    checks: Vec<CheckStatus>,
}

fn total(lines: &crate::domain::flow::Lines) -> u64 {
    let marker = usize::from(lines.dropped > 0);
    lines.dropped + lines.lines.len().saturating_sub(marker) as u64
}

/// The last `n` real lines (never the "lines dropped" marker).
fn last_lines(lines: &crate::domain::flow::Lines, n: u64) -> impl Iterator<Item = &String> {
    let marker = usize::from(lines.dropped > 0);
    let body = &lines.lines[marker.min(lines.lines.len())..];
    let n = (n as usize).min(body.len());
    body[body.len() - n..].iter()
}

impl Mark {
    pub fn of(picture: &FlowPicture) -> Self {
        Mark {
            state: picture.state,
            percent: picture.progress.percent,
            logs_total: total(&picture.logs),
            errors_total: total(&picture.errors),
            tasks: picture.tasks.clone(),
            checks: picture.checks.clone(),
        }
    }

    /// What changed between this mark and `now`, in the order a follower should see it: tasks,
    /// lines, errors, progress, and the state last.
    pub fn changes(&self, now: &FlowPicture) -> Vec<FlowUpdate> {
        let mut updates = Vec::new();
        let mut rows_moved = false;
        for (i, task) in now.tasks.iter().enumerate() {
            match self.tasks.get(i) {
                Some(before) if before == task => {}
                Some(before) if only_rows_differ(before, task) => rows_moved = true,
                _ => updates.push(FlowUpdate::Task(task.clone())),
            }
        }
        for (i, check) in now.checks.iter().enumerate() {
            if self.checks.get(i) != Some(check) {
                updates.push(FlowUpdate::Check(check.clone()));
            }
        }
        for line in last_lines(&now.logs, total(&now.logs).saturating_sub(self.logs_total)) {
            updates.push(FlowUpdate::Log(LineUpdate { line: line.clone() }));
        }
        for line in last_lines(&now.errors, total(&now.errors).saturating_sub(self.errors_total)) {
            updates.push(FlowUpdate::Error(LineUpdate { line: line.clone() }));
        }
        if rows_moved || now.progress.percent != self.percent {
            updates.push(FlowUpdate::Progress(progress_of(now)));
        }
        if now.state != self.state {
            updates.push(FlowUpdate::State(state_of(now)));
        }
        updates
    }
}

fn only_rows_differ(a: &TaskStatus, b: &TaskStatus) -> bool {
    a.rows != b.rows
        && TaskStatus {
            rows: b.rows,
            ..a.clone()
        } == *b
}

pub fn progress_of(p: &FlowPicture) -> ProgressUpdate {
    ProgressUpdate {
        percent: p.progress.percent,
        updated_utc: p.progress.updated_utc,
        tasks: p
            .tasks
            .iter()
            .filter(|t| t.state == TaskState::Running)
            .map(|t| TaskRows {
                name: t.name.clone(),
                rows: t.rows.unwrap_or(0),
            })
            .collect(),
    }
}

pub fn state_of(p: &FlowPicture) -> StateUpdate {
    StateUpdate {
        state: p.state,
        percent: p.progress.percent,
        updated_utc: p.updated_utc,
        started_utc: p.started_utc,
        finished_utc: p.finished_utc,
    }
}

/// An update with its number in the flow's channel (1, 2, ...). A snapshot read together with
/// the channel's current number (`EventHub::seq`) already shows every update up to it.
pub type Sequenced = (u64, FlowUpdate);

struct Channel {
    sender: broadcast::Sender<Sequenced>,
    /// The number of the last update sent.
    seq: AtomicU64,
}

impl Channel {
    fn new() -> Self {
        Channel {
            sender: broadcast::channel(CHANNEL_CAPACITY).0,
            seq: AtomicU64::new(0),
        }
    }

    fn send(&self, update: FlowUpdate) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        // An error only means nobody listens any more.
        let _ = self.sender.send((seq, update));
    }
}

/// The channels of followed flows. Shared (`Arc`) by the Persister and the API.
#[derive(Default)]
pub struct EventHub {
    channels: DashMap<i64, Channel>,
}

impl EventHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Follows a flow. Subscribe *before* reading the snapshot, so nothing falls in between.
    pub fn subscribe(&self, flow_id: i64) -> broadcast::Receiver<Sequenced> {
        self.channels
            .entry(flow_id)
            .or_insert_with(Channel::new)
            .sender
            .subscribe()
    }

    /// The number of the last update sent to the flow's followers (0 if none).
    pub fn seq(&self, flow_id: i64) -> u64 {
        self.channels
            .get(&flow_id)
            .map_or(0, |c| c.seq.load(Ordering::SeqCst))
    }

    /// Whether anyone follows the flow (so the publisher can skip the work of diffing).
    pub fn is_followed(&self, flow_id: i64) -> bool {
        self.channels
            .get(&flow_id)
            .is_some_and(|c| c.sender.receiver_count() > 0)
    }

    /// Sends to the flow's followers, if any; never waits.
    pub fn publish(&self, flow_id: i64, update: FlowUpdate) {
        if let Some(channel) = self.channels.get(&flow_id) {
            channel.send(update);
        }
    }

    /// Publishes the final state and closes the channel: followers drain what they have and
    /// then see it closed; later followers read the (final) snapshot from the database.
    pub fn publish_final(&self, flow_id: i64, update: FlowUpdate) {
        if let Some((_, channel)) = self.channels.remove(&flow_id) {
            channel.send(update);
        }
    }

    /// Drops the flow's channel if nobody follows it any more (a follower leaving calls this).
    pub fn release(&self, flow_id: i64) {
        self.channels
            .remove_if(&flow_id, |_, c| c.sender.receiver_count() == 0);
    }

    /// How many flows are followed (for tests and metrics).
    pub fn followed_flows(&self) -> usize {
        self.channels.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::dag::{Dag, DagNode, NodeKind};
    use crate::domain::flow::{FlowEvent, Level};
    use crate::domain::time;

    fn picture(max_lines: usize) -> FlowPicture {
        let dag = Dag::build(vec![
            DagNode::new("a", NodeKind::Ingest, vec![]),
            DagNode::new("b", NodeKind::Transform, vec!["a".into()]),
        ])
        .unwrap();
        FlowPicture::new_ready(1, &dag, max_lines)
    }

    fn apply(p: &mut FlowPicture, event: FlowEvent) -> Vec<FlowUpdate> {
        let mark = Mark::of(p);
        p.apply(&event, time::now());
        mark.changes(p)
    }

    fn names(updates: &[FlowUpdate]) -> Vec<&'static str> {
        updates.iter().map(FlowUpdate::name).collect()
    }

    #[test]
    fn each_event_becomes_the_updates_it_caused() {
        let mut p = picture(100);
        let u = apply(&mut p, FlowEvent::State(FlowState::Running));
        assert_eq!(names(&u), ["log", "state"]);
        let u = apply(
            &mut p,
            FlowEvent::TaskStarted {
                task: "a".into(),
                attempt: 1,
            },
        );
        assert_eq!(names(&u), ["task", "log"]);
        let u = apply(
            &mut p,
            FlowEvent::TaskProgress {
                task: "a".into(),
                rows: 10,
                estimated_total: Some(20),
            },
        );
        assert_eq!(names(&u), ["progress"]);
        let FlowUpdate::Progress(progress) = &u[0] else {
            unreachable!()
        };
        assert_eq!(
            progress.tasks,
            vec![TaskRows {
                name: "a".into(),
                rows: 10
            }]
        );
        let u = apply(
            &mut p,
            FlowEvent::TaskFailed {
                task: "b".into(),
                error: "boom".into(),
                retry_in: None,
            },
        );
        // A failed task's work does not count as progress.
        assert_eq!(names(&u), ["task", "log", "error"]);
        let u = apply(&mut p, FlowEvent::State(FlowState::Failed));
        assert_eq!(names(&u), ["task", "log", "state"]);
        let FlowUpdate::State(s) = u.last().unwrap() else {
            unreachable!()
        };
        assert_eq!(s.state, FlowState::Failed);
    }

    #[test]
    fn new_lines_are_found_past_the_cap() {
        let mut p = picture(3);
        for i in 0..5 {
            apply(
                &mut p,
                FlowEvent::Log {
                    level: Level::Info,
                    task: None,
                    message: format!("line {i}"),
                },
            );
        }
        let u = apply(
            &mut p,
            FlowEvent::Log {
                level: Level::Info,
                task: None,
                message: "last".into(),
            },
        );
        assert_eq!(names(&u), ["log"]);
        let FlowUpdate::Log(l) = &u[0] else { unreachable!() };
        assert!(l.line.ends_with("[flow] last"), "{}", l.line);
        let completed = apply(
            &mut p,
            FlowEvent::TaskCompleted {
                task: "a".into(),
                rows: 1,
                elapsed: Duration::from_millis(5),
            },
        );
        assert!(names(&completed).contains(&"task"));
    }

    #[tokio::test]
    async fn followers_get_updates_and_the_channel_closes_after_the_end() {
        let hub = EventHub::new();
        assert!(!hub.is_followed(7));
        let mut a = hub.subscribe(7);
        let mut b = hub.subscribe(7);
        assert!(hub.is_followed(7));
        hub.publish(7, FlowUpdate::Log(LineUpdate { line: "x".into() }));
        hub.publish(8, FlowUpdate::Resync);
        assert_eq!(hub.seq(7), 1);
        assert_eq!(hub.seq(8), 0);
        hub.publish_final(7, FlowUpdate::Resync);
        for rx in [&mut a, &mut b] {
            let (seq, update) = rx.recv().await.unwrap();
            assert_eq!((seq, update.name()), (1, "log"));
            assert_eq!(rx.recv().await.unwrap(), (2, FlowUpdate::Resync));
            assert!(matches!(
                rx.recv().await,
                Err(broadcast::error::RecvError::Closed)
            ));
        }
        assert_eq!(hub.followed_flows(), 0);
        let c = hub.subscribe(9);
        drop(c);
        hub.release(9);
        assert_eq!(hub.followed_flows(), 0);
    }
}
