//! Flow and task states, and `FlowPicture`: a flow's output as it evolves, with the rules for
//! progress (monotonic, 100 exactly at COMPLETED), log lines (capped) and errors. The Persister
//! actor owns one picture per running flow; the rules live here so they can be tested alone.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::checks::{Check, CheckType, Severity};
use super::dag::{Dag, NodeKind};
use super::time::{self, rfc3339};

/// What a flow's own lines (public: anyone who may read the flow sees them) say about an
/// internal error: not its text, which goes to the service log with the flow id, but where to
/// look.
pub fn internal_error_for_flow(flow_id: i64) -> String {
    format!("an internal error occurred (see the service log, flow {flow_id})")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum FlowState {
    Ready,
    Running,
    Cancelled,
    Failed,
    Completed,
}

impl FlowState {
    pub const ALL: [FlowState; 5] = [
        FlowState::Ready,
        FlowState::Running,
        FlowState::Cancelled,
        FlowState::Failed,
        FlowState::Completed,
    ];

    pub fn is_final(self) -> bool {
        matches!(
            self,
            FlowState::Cancelled | FlowState::Failed | FlowState::Completed
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::Ready => "READY",
            FlowState::Running => "RUNNING",
            FlowState::Cancelled => "CANCELLED",
            FlowState::Failed => "FAILED",
            FlowState::Completed => "COMPLETED",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for FlowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskState {
    Pending,
    Running,
    Completed,
    Failed,
    Skipped,
    Cancelled,
}

impl TaskState {
    pub fn is_final(self) -> bool {
        !matches!(self, TaskState::Pending | TaskState::Running)
    }
}

/// One task's status as shown to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskStatus {
    pub name: String,
    pub kind: NodeKind,
    pub state: TaskState,
    pub attempts: u32,
    /// Rows produced so far (while running) or in all (when completed).
    pub rows: Option<u64>,
    #[serde(with = "rfc3339::option")]
    pub started_utc: Option<DateTime<Utc>>,
    #[serde(with = "rfc3339::option")]
    pub finished_utc: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum CheckState {
    Pending,
    Running,
    Passed,
    /// An `error` check failed: the flow fails and nothing is published.
    Failed,
    /// A `warn` check failed: reported, the flow may complete.
    Warned,
    /// It did not run (what it reads failed, or the flow ended first).
    Skipped,
}

impl CheckState {
    pub fn is_final(self) -> bool {
        !matches!(self, CheckState::Pending | CheckState::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Pending => "PENDING",
            CheckState::Running => "RUNNING",
            CheckState::Passed => "PASSED",
            CheckState::Failed => "FAILED",
            CheckState::Warned => "WARNED",
            CheckState::Skipped => "SKIPPED",
        }
    }
}

/// One check's result as shown to clients (`output.checks[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckStatus {
    pub name: String,
    pub node: String,
    #[serde(rename = "type")]
    pub check_type: CheckType,
    pub severity: Severity,
    pub state: CheckState,
    /// How many rows failed (for `unique`, how many keys are duplicated); `null` until it ran.
    pub failing_rows: Option<u64>,
    /// At most 5 failing rows, long values cut.
    #[schema(value_type = Vec<Object>)]
    pub sample: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Why it failed, for people (or why it could not run: an unknown column, with a hint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(with = "rfc3339::option")]
    pub finished_utc: Option<DateTime<Utc>>,
}

impl CheckStatus {
    pub fn pending(check: &Check) -> Self {
        CheckStatus {
            name: check.name.clone(),
            node: check.node.clone(),
            check_type: check.check_type,
            severity: check.severity,
            state: CheckState::Pending,
            failing_rows: None,
            sample: vec![],
            message: None,
            finished_utc: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    pub percent: f64,
    #[serde(with = "rfc3339")]
    pub updated_utc: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lines {
    pub lines: Vec<String>,
    #[serde(with = "rfc3339")]
    pub updated_utc: DateTime<Utc>,
    /// Lines dropped to respect the cap (oldest first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// Something that happened to a flow. The Persister applies these to the flow's picture.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowEvent {
    State(FlowState),
    TaskStarted {
        task: String,
        attempt: u32,
    },
    TaskProgress {
        task: String,
        rows: u64,
        estimated_total: Option<u64>,
    },
    TaskCompleted {
        task: String,
        rows: u64,
        elapsed: Duration,
    },
    /// An attempt failed; `retry_in` is set when another attempt will follow.
    TaskFailed {
        task: String,
        error: String,
        retry_in: Option<Duration>,
    },
    TaskSkipped {
        task: String,
        because: String,
    },
    TaskCancelled {
        task: String,
    },
    Log {
        level: Level,
        task: Option<String>,
        message: String,
    },
    /// A flow-level failure (timeout, crash, internal error) that belongs in `errors`.
    FlowError {
        message: String,
    },
    /// A cursor source was read (or is about to be: `through` null): `output.cursors`.
    Cursor {
        source: String,
        entry: super::cursor::CursorEntry,
    },
    /// A check ran to its verdict (PASSED, FAILED or WARNED).
    CheckFinished {
        name: String,
        state: CheckState,
        failing_rows: Option<u64>,
        sample: Vec<serde_json::Map<String, serde_json::Value>>,
        message: Option<String>,
    },
    /// The flow's execution crashed; `retry_in` is set when the supervisor restarts it.
    Crashed {
        restart: u32,
        max_restarts: u32,
        cause: String,
        retry_in: Option<Duration>,
    },
}

/// The label of flow-level lines.
pub const FLOW_LABEL: &str = "flow";

/// A flow's output, in memory, with the rules for changing it.
#[derive(Debug, Clone)]
pub struct FlowPicture {
    pub output_id: i64,
    pub created_utc: DateTime<Utc>,
    pub updated_utc: DateTime<Utc>,
    pub state: FlowState,
    pub progress: Progress,
    pub logs: Lines,
    pub errors: Lines,
    pub tasks: Vec<TaskStatus>,
    /// The flow's checks, in the flow input's order.
    pub checks: Vec<CheckStatus>,
    pub started_utc: Option<DateTime<Utc>>,
    pub finished_utc: Option<DateTime<Utc>>,
    pub restarts: i32,
    /// What each cursor source reads or read (by source name); empty without cursor sources.
    pub cursors: super::cursor::Cursors,
    /// Per task, the fraction of its work done (0..=1); parallel to `tasks`. Only completed work
    /// counts: a skipped, failed or cancelled task does not move the percent.
    fractions: Vec<f64>,
    max_lines: usize,
}

impl FlowPicture {
    /// A new READY picture with one PENDING task per DAG node, in the DAG's order.
    pub fn new_ready(output_id: i64, dag: &Dag, max_lines: usize) -> Self {
        let now = time::now();
        let tasks: Vec<TaskStatus> = dag
            .ordered_nodes()
            .map(|n| TaskStatus {
                name: n.name.clone(),
                kind: n.kind,
                state: TaskState::Pending,
                attempts: 0,
                rows: None,
                started_utc: None,
                finished_utc: None,
                error: None,
            })
            .collect();
        Self::restore(
            output_id,
            now,
            now,
            FlowState::Ready,
            Progress {
                percent: 0.0,
                updated_utc: now,
            },
            Lines {
                lines: vec![],
                updated_utc: now,
                dropped: 0,
            },
            Lines {
                lines: vec![],
                updated_utc: now,
                dropped: 0,
            },
            tasks,
            None,
            None,
            0,
            max_lines,
        )
    }

    /// Rebuilds a picture from stored values.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        output_id: i64,
        created_utc: DateTime<Utc>,
        updated_utc: DateTime<Utc>,
        state: FlowState,
        progress: Progress,
        logs: Lines,
        errors: Lines,
        tasks: Vec<TaskStatus>,
        started_utc: Option<DateTime<Utc>>,
        finished_utc: Option<DateTime<Utc>>,
        restarts: i32,
        max_lines: usize,
    ) -> Self {
        let fractions = tasks
            .iter()
            .map(|t| if t.state == TaskState::Completed { 1.0 } else { 0.0 })
            .collect();
        FlowPicture {
            output_id,
            created_utc,
            updated_utc,
            state,
            progress,
            logs,
            errors,
            tasks,
            checks: Vec::new(),
            started_utc,
            finished_utc,
            restarts,
            cursors: Default::default(),
            fractions,
            max_lines: max_lines.max(2),
        }
    }

    /// The picture with a PENDING status per check.
    pub fn with_checks(self, checks: &[Check]) -> Self {
        self.with_check_statuses(checks.iter().map(CheckStatus::pending).collect())
    }

    /// The picture with these check statuses (as stored).
    pub fn with_check_statuses(mut self, checks: Vec<CheckStatus>) -> Self {
        self.checks = checks;
        self
    }

    fn check_mut(&mut self, name: &str) -> Option<&mut CheckStatus> {
        self.checks.iter_mut().find(|c| c.name == name)
    }

    /// Prepares a picture for a resumed run: every task in `done` is COMPLETED (an earlier run
    /// finished it, even if its completion was not written before a crash), every other one
    /// PENDING again. Returns whether that changed anything (a fresh READY flow's picture stays
    /// as it is).
    pub fn resume(&mut self, done: &std::collections::HashSet<String>) -> bool {
        let mut changed = false;
        let now = time::now();
        for (i, t) in self.tasks.iter_mut().enumerate() {
            if done.contains(&t.name) {
                if t.state != TaskState::Completed {
                    changed = true;
                    t.state = TaskState::Completed;
                    t.error = None;
                    t.finished_utc.get_or_insert(now);
                    self.fractions[i] = 1.0;
                }
            } else {
                changed |= t.state != TaskState::Pending
                    || t.rows.is_some()
                    || t.error.is_some()
                    || t.finished_utc.is_some()
                    || self.fractions[i] != 0.0;
                t.state = TaskState::Pending;
                t.rows = None;
                t.error = None;
                t.finished_utc = None;
                self.fractions[i] = 0.0;
            }
        }
        for c in self.checks.iter_mut().filter(|c| !done.contains(&c.name)) {
            changed |= c.state != CheckState::Pending;
            let pending = CheckStatus {
                state: CheckState::Pending,
                failing_rows: None,
                sample: vec![],
                message: None,
                finished_utc: None,
                ..c.clone()
            };
            *c = pending;
        }
        changed
    }

    fn task_index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.name == name)
    }

    /// Applies one event at time `now`. Returns whether the state changed (which the Persister
    /// writes at once rather than coalesced).
    pub fn apply(&mut self, event: &FlowEvent, now: DateTime<Utc>) -> bool {
        self.updated_utc = now;
        let mut state_changed = false;
        match event {
            FlowEvent::State(state) => {
                if *state != self.state && !self.state.is_final() {
                    self.state = *state;
                    state_changed = true;
                    match state {
                        FlowState::Running => {
                            self.started_utc.get_or_insert(now);
                        }
                        s if s.is_final() => {
                            self.finished_utc = Some(now);
                            for t in self.tasks.iter_mut() {
                                if !t.state.is_final() {
                                    t.state = if *s == FlowState::Completed {
                                        TaskState::Completed
                                    } else {
                                        TaskState::Cancelled
                                    };
                                    t.finished_utc.get_or_insert(now);
                                }
                            }
                            for c in self.checks.iter_mut().filter(|c| !c.state.is_final()) {
                                c.state = CheckState::Skipped;
                                c.finished_utc = Some(now);
                            }
                        }
                        _ => {}
                    }
                    let line = match state {
                        FlowState::Running => "flow running".to_string(),
                        s => format!("flow {}", s.as_str().to_lowercase()),
                    };
                    let level = if *state == FlowState::Failed {
                        Level::Error
                    } else {
                        Level::Info
                    };
                    self.push_log(now, level, FLOW_LABEL, &line);
                }
            }
            FlowEvent::TaskStarted { task, attempt } => {
                if let Some(i) = self.task_index(task) {
                    let t = &mut self.tasks[i];
                    t.state = TaskState::Running;
                    t.attempts = *attempt;
                    t.rows = Some(0);
                    t.error = None;
                    t.finished_utc = None;
                    t.started_utc.get_or_insert(now);
                    let line = if *attempt > 1 {
                        format!("started (attempt {attempt})")
                    } else {
                        "started".to_string()
                    };
                    self.fractions[i] = 0.0;
                    self.push_log(now, Level::Info, task, &line);
                }
                if let Some(c) = self.check_mut(task) {
                    c.state = CheckState::Running;
                    c.failing_rows = None;
                    c.sample = vec![];
                    c.message = None;
                    c.finished_utc = None;
                }
            }
            FlowEvent::TaskProgress {
                task,
                rows,
                estimated_total,
            } => {
                if let Some(i) = self.task_index(task) {
                    if self.tasks[i].state == TaskState::Running {
                        self.tasks[i].rows = Some(*rows);
                        if let Some(total) = estimated_total.filter(|t| *t > 0) {
                            self.fractions[i] = (*rows as f64 / total as f64).min(0.99);
                        }
                    }
                }
            }
            FlowEvent::TaskCompleted { task, rows, elapsed } => {
                if let Some(i) = self.task_index(task) {
                    let t = &mut self.tasks[i];
                    t.state = TaskState::Completed;
                    t.rows = Some(*rows);
                    t.finished_utc = Some(now);
                    t.error = None;
                    self.fractions[i] = 1.0;
                    let line = format!("completed: {rows} rows in {:.2} s", elapsed.as_secs_f64());
                    self.push_log(now, Level::Info, task, &line);
                }
            }
            FlowEvent::TaskFailed {
                task,
                error,
                retry_in,
            } => {
                if let Some(i) = self.task_index(task) {
                    match retry_in {
                        Some(delay) => {
                            let line = format!(
                                "attempt {} failed, retrying in {:.1} s: {error}",
                                self.tasks[i].attempts,
                                delay.as_secs_f64()
                            );
                            self.push_log(now, Level::Warn, task, &line);
                        }
                        None => {
                            let t = &mut self.tasks[i];
                            t.state = TaskState::Failed;
                            t.finished_utc = Some(now);
                            t.error = Some(error.clone());
                            let line = format!("failed: {error}");
                            self.push_log(now, Level::Error, task, &line);
                            self.push_error(now, task, error);
                            // A check whose own run failed (a timeout, an error that outlasted
                            // its retries) failed too; the flow fails with it.
                            if let Some(c) = self.check_mut(task).filter(|c| !c.state.is_final()) {
                                c.state = CheckState::Failed;
                                c.message = Some(error.clone());
                                c.finished_utc = Some(now);
                            }
                        }
                    }
                }
            }
            FlowEvent::TaskSkipped { task, because } => {
                if let Some(i) = self.task_index(task) {
                    let t = &mut self.tasks[i];
                    t.state = TaskState::Skipped;
                    t.finished_utc = Some(now);
                    let line = format!("skipped: {because}");
                    self.push_log(now, Level::Warn, task, &line);
                }
                if let Some(c) = self.check_mut(task) {
                    c.state = CheckState::Skipped;
                    c.finished_utc = Some(now);
                }
            }
            FlowEvent::TaskCancelled { task } => {
                if let Some(i) = self.task_index(task) {
                    let t = &mut self.tasks[i];
                    if !t.state.is_final() {
                        let was_running = t.state == TaskState::Running;
                        t.state = TaskState::Cancelled;
                        t.finished_utc = Some(now);
                        if was_running {
                            self.push_log(now, Level::Warn, task, "cancelled");
                        }
                    }
                }
                if let Some(c) = self.check_mut(task).filter(|c| !c.state.is_final()) {
                    c.state = CheckState::Skipped;
                    c.finished_utc = Some(now);
                }
            }
            FlowEvent::Log { level, task, message } => {
                let label = task.as_deref().unwrap_or(FLOW_LABEL).to_string();
                self.push_log(now, *level, &label, message);
            }
            FlowEvent::CheckFinished {
                name,
                state,
                failing_rows,
                sample,
                message,
            } => {
                if let Some(c) = self.check_mut(name) {
                    c.state = *state;
                    c.failing_rows = *failing_rows;
                    c.sample = sample.clone();
                    c.message = message.clone();
                    c.finished_utc = Some(now);
                }
                // A FAILED check is logged as its task's failure.
                match (state, message) {
                    (CheckState::Passed, _) => self.push_log(now, Level::Info, name, "check passed"),
                    (CheckState::Failed, _) => {}
                    (_, Some(m)) => self.push_log(now, Level::Warn, name, m),
                    (s, None) => {
                        let line = format!("check {}", s.as_str().to_lowercase());
                        self.push_log(now, Level::Warn, name, &line)
                    }
                }
            }
            FlowEvent::FlowError { message } => {
                self.push_log(now, Level::Error, FLOW_LABEL, message);
                self.push_error(now, FLOW_LABEL, message);
            }
            FlowEvent::Crashed {
                restart,
                max_restarts,
                cause,
                retry_in,
            } => match retry_in {
                Some(delay) => {
                    self.restarts = *restart as i32;
                    let line = format!(
                        "crashed: {cause}; restart {restart} of {max_restarts} in {:.1} s from the last checkpoints",
                        delay.as_secs_f64()
                    );
                    self.push_log(now, Level::Warn, FLOW_LABEL, &line);
                }
                None => {
                    let line = format!("crashed: {cause}; gave up after {max_restarts} restart(s)");
                    self.push_log(now, Level::Error, FLOW_LABEL, &line);
                    self.push_error(now, FLOW_LABEL, &line);
                }
            },
            FlowEvent::Cursor { source, entry } => {
                if let Some(line) = entry.describe() {
                    self.push_log(now, Level::Info, source, &line);
                }
                self.cursors.insert(source.clone(), entry.clone());
            }
        }
        self.update_percent(now);
        state_changed
    }

    /// Recomputes the percent: the mean of task fractions, kept below 100 until COMPLETED and
    /// never lower than before.
    fn update_percent(&mut self, now: DateTime<Utc>) {
        let computed = if self.state == FlowState::Completed {
            100.0
        } else if self.fractions.is_empty() {
            0.0
        } else {
            let mean = self.fractions.iter().sum::<f64>() / self.fractions.len() as f64;
            (mean * 100.0).min(99.9)
        };
        let computed = (computed * 10.0).floor() / 10.0;
        if computed > self.progress.percent {
            self.progress = Progress {
                percent: computed,
                updated_utc: now,
            };
        }
    }

    fn push_log(&mut self, now: DateTime<Utc>, level: Level, label: &str, message: &str) {
        let line = format!("{} {} [{label}] {message}", time::format(&now), level.as_str());
        push_capped(&mut self.logs, line, self.max_lines, now);
    }

    fn push_error(&mut self, now: DateTime<Utc>, label: &str, message: &str) {
        let line = format!("{} ERROR [{label}] {}", time::format(&now), one_line(message));
        push_capped(&mut self.errors, line, self.max_lines, now);
    }
}

/// One event, one line: embedded line breaks become spaces.
fn one_line(message: &str) -> std::borrow::Cow<'_, str> {
    if message.contains('\n') {
        std::borrow::Cow::Owned(
            message
                .split('\n')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        )
    } else {
        std::borrow::Cow::Borrowed(message)
    }
}

/// Appends a line, dropping the oldest beyond `cap`; the first line then says how many were
/// dropped so a reader knows the log is not complete.
fn push_capped(lines: &mut Lines, line: String, cap: usize, now: DateTime<Utc>) {
    let has_marker = lines.dropped > 0;
    let mut body: VecDeque<String> = lines.lines.drain(..).skip(usize::from(has_marker)).collect();
    body.push_back(line);
    let room = if body.len() > cap { cap - 1 } else { cap };
    while body.len() > room {
        body.pop_front();
        lines.dropped += 1;
    }
    if lines.dropped > 0 {
        body.push_front(format!(
            "{} WARN [{FLOW_LABEL}] {} earlier lines dropped (engine.max_log_lines = {cap})",
            time::format(&now),
            lines.dropped
        ));
    }
    lines.lines = body.into();
    lines.updated_utc = now;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dag::{Dag, DagNode};

    fn dag() -> Dag {
        Dag::build(vec![
            DagNode::new("a", NodeKind::Ingest, vec![]),
            DagNode::new("b", NodeKind::Transform, vec!["a".into()]),
            DagNode::new("b->t", NodeKind::Persist, vec!["b".into()]),
            DagNode::new("c", NodeKind::Transform, vec!["a".into()]),
        ])
        .unwrap()
    }

    fn ev_started(t: &str) -> FlowEvent {
        FlowEvent::TaskStarted {
            task: t.into(),
            attempt: 1,
        }
    }
    fn ev_done(t: &str) -> FlowEvent {
        FlowEvent::TaskCompleted {
            task: t.into(),
            rows: 10,
            elapsed: Duration::from_millis(1500),
        }
    }

    #[test]
    fn progress_is_monotonic_and_100_only_at_completed() {
        let mut p = FlowPicture::new_ready(1, &dag(), 100);
        let now = time::now();
        let mut seen = vec![];
        p.apply(&FlowEvent::State(FlowState::Running), now);
        for t in ["a", "b", "c", "b->t"] {
            p.apply(&ev_started(t), now);
            p.apply(
                &FlowEvent::TaskProgress {
                    task: t.into(),
                    rows: 5,
                    estimated_total: Some(10),
                },
                now,
            );
            seen.push(p.progress.percent);
            // A retry resets the task's rows; the percent must not go down.
            p.apply(&ev_started(t), now);
            seen.push(p.progress.percent);
            p.apply(&ev_done(t), now);
            seen.push(p.progress.percent);
        }
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert!(seen.iter().all(|p| *p < 100.0), "{seen:?}");
        p.apply(&FlowEvent::State(FlowState::Completed), now);
        assert_eq!(p.progress.percent, 100.0);
    }

    #[test]
    fn log_lines_have_timestamp_level_and_task() {
        let mut p = FlowPicture::new_ready(1, &dag(), 100);
        let now = time::now();
        p.apply(&ev_started("a"), now);
        p.apply(&ev_done("a"), now);
        let last = p.logs.lines.last().unwrap();
        assert!(last.ends_with(" INFO [a] completed: 10 rows in 1.50 s"), "{last}");
        assert!(last.starts_with(&time::format(&now)));
        p.apply(
            &FlowEvent::TaskFailed {
                task: "b".into(),
                error: "boom".into(),
                retry_in: None,
            },
            now,
        );
        assert!(p.errors.lines[0].ends_with("ERROR [b] boom"));
        assert_eq!(
            p.tasks.iter().find(|t| t.name == "b").unwrap().state,
            TaskState::Failed
        );
    }

    #[test]
    fn logs_are_capped_with_a_dropped_marker() {
        let mut p = FlowPicture::new_ready(1, &dag(), 10);
        let now = time::now();
        for i in 0..25 {
            p.apply(
                &FlowEvent::Log {
                    level: Level::Info,
                    task: None,
                    message: format!("line {i}"),
                },
                now,
            );
        }
        assert_eq!(p.logs.lines.len(), 10);
        assert_eq!(p.logs.dropped, 16);
        assert!(
            p.logs.lines[0].contains("16 earlier lines dropped"),
            "{}",
            p.logs.lines[0]
        );
        assert!(p.logs.lines[9].ends_with("line 24"));
        assert!(p.logs.lines[1].ends_with("line 16"));
    }

    #[test]
    fn checks_follow_their_tasks_and_verdicts() {
        use crate::domain::checks::{Check, CheckType, Severity};
        let dag = Dag::build(vec![
            DagNode::new("a", NodeKind::Ingest, vec![]),
            DagNode::new("row_count(a)", NodeKind::Check, vec!["a".into()]),
            DagNode::new("odd", NodeKind::Check, vec!["a".into()]),
        ])
        .unwrap();
        let check = |name: &str| Check {
            name: name.into(),
            node: "a".into(),
            check_type: CheckType::RowCount,
            severity: Severity::Warn,
            columns: vec![],
            column: None,
            values: vec![],
            to: None,
            to_column: None,
            min: Some(1),
            max: None,
            sql: None,
            reads: vec![],
        };
        let mut p = FlowPicture::new_ready(1, &dag, 100).with_checks(&[check("row_count(a)"), check("odd")]);
        let now = time::now();
        assert_eq!(p.checks[0].state, CheckState::Pending);
        p.apply(&ev_started("row_count(a)"), now);
        assert_eq!(p.checks[0].state, CheckState::Running);
        p.apply(
            &FlowEvent::CheckFinished {
                name: "row_count(a)".into(),
                state: CheckState::Warned,
                failing_rows: Some(1),
                sample: vec![],
                message: Some("check row_count(a) failed: a has 0 rows; expected at least 1".into()),
            },
            now,
        );
        assert_eq!(p.checks[0].state, CheckState::Warned);
        assert_eq!(p.checks[0].failing_rows, Some(1));
        assert!(p
            .logs
            .lines
            .last()
            .unwrap()
            .ends_with("WARN [row_count(a)] check row_count(a) failed: a has 0 rows; expected at least 1"));
        assert!(p.errors.lines.is_empty());
        // A check whose own run failed is FAILED; one that never ran is SKIPPED at the end;
        // a resumed run starts them again.
        let mut timed_out = p.clone();
        timed_out.apply(
            &FlowEvent::TaskFailed {
                task: "odd".into(),
                error: "timed out after 1 s (options.task_timeout_s)".into(),
                retry_in: None,
            },
            now,
        );
        assert_eq!(timed_out.checks[1].state, CheckState::Failed);
        assert_eq!(
            timed_out.checks[1].message.as_deref(),
            Some("timed out after 1 s (options.task_timeout_s)")
        );
        p.apply(&FlowEvent::State(FlowState::Failed), now);
        assert_eq!(p.checks[1].state, CheckState::Skipped);
        let done: std::collections::HashSet<String> = ["row_count(a)".to_string()].into();
        let mut resumed = p.clone();
        resumed.state = FlowState::Running;
        assert!(resumed.resume(&done));
        assert_eq!(resumed.checks[0].state, CheckState::Warned);
        assert_eq!(resumed.checks[1].state, CheckState::Pending);
    }

    #[test]
    fn final_state_closes_open_tasks_and_is_sticky() {
        let mut p = FlowPicture::new_ready(1, &dag(), 100);
        let now = time::now();
        p.apply(&FlowEvent::State(FlowState::Running), now);
        p.apply(&ev_started("a"), now);
        assert!(p.apply(&FlowEvent::State(FlowState::Cancelled), now));
        assert!(p.tasks.iter().all(|t| t.state == TaskState::Cancelled));
        assert!(!p.apply(&FlowEvent::State(FlowState::Completed), now));
        assert_eq!(p.state, FlowState::Cancelled);
        assert_eq!(
            p.progress.percent, 0.0,
            "cancelled work does not count as progress"
        );
    }
}
