//! Prometheus metrics, all registered here in one registry per application (no global
//! registry, so several apps can run in one test process). The Persister feeds the flow and
//! task metrics from the events it applies, the HTTP middleware the request counts; flows by
//! state are read from the metadata database when scraped.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::domain::dag::NodeKind;
use crate::domain::flow::{CheckState, FlowEvent, FlowPicture, FlowState};
use crate::domain::store::StoreEngine;

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// Flows by state (set from the database at each scrape).
    pub flows: IntGaugeVec,
    pub tasks_started: IntCounterVec,
    pub tasks_completed: IntCounterVec,
    pub tasks_failed: IntCounterVec,
    pub task_duration: HistogramVec,
    pub rows_read: IntCounterVec,
    pub rows_written: IntCounterVec,
    /// Rows read, by flow input and source (an incremental source's are the changed rows).
    pub source_rows_read: IntCounterVec,
    pub restarts: IntCounter,
    pub persister_batch: Histogram,
    pub persister_write: Histogram,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub event_followers: IntGauge,
    /// Checks that ran to a verdict, by result (`passed`, `failed`, `warned`).
    pub checks: IntCounterVec,
    /// Several instances: leases this instance claimed, took over from an instance that stopped
    /// renewing, or lost to another instance.
    pub leases: IntCounterVec,
}

/// The events `Metrics::leases` counts.
pub const LEASE_EVENTS: [&str; 3] = ["claimed", "taken_over", "lost"];

const ALL_STATES: [FlowState; 5] = [
    FlowState::Ready,
    FlowState::Running,
    FlowState::Cancelled,
    FlowState::Failed,
    FlowState::Completed,
];
const ALL_KINDS: [NodeKind; 4] = [
    NodeKind::Ingest,
    NodeKind::Transform,
    NodeKind::Persist,
    NodeKind::Check,
];
const CHECK_RESULTS: [CheckState; 3] = [CheckState::Passed, CheckState::Failed, CheckState::Warned];

// The metric definitions below are constants, and `Metrics::new` runs in every test: their
// registration cannot fail at run time.
#[allow(clippy::expect_used)]
fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

#[allow(clippy::expect_used)]
fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let metric =
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("a valid histogram");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

#[allow(clippy::expect_used)]
fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("a valid histogram");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (and zero series for the known labels, so
    /// dashboards see them before the first flow). The definitions are constants: registering
    /// them cannot fail at run time.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let registry = Registry::new();
        let flows = IntGaugeVec::new(
            Opts::new("sluice_flows", "Flows by state, from the metadata database."),
            &["state"],
        )
        .expect("a valid metric definition");
        registry
            .register(Box::new(flows.clone()))
            .expect("metric names are unique");
        let tasks_started = counter_vec(
            &registry,
            "sluice_tasks_started_total",
            "Task attempts started, by node kind.",
            &["kind"],
        );
        let tasks_completed = counter_vec(
            &registry,
            "sluice_tasks_completed_total",
            "Tasks completed, by node kind.",
            &["kind"],
        );
        let tasks_failed = counter_vec(
            &registry,
            "sluice_tasks_failed_total",
            "Tasks failed for good (after their retries), by node kind.",
            &["kind"],
        );
        let task_duration = histogram_vec(
            &registry,
            "sluice_task_duration_seconds",
            "Duration of completed tasks, by node kind.",
            &["kind"],
            vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
            ],
        );
        let rows_read = counter_vec(
            &registry,
            "sluice_rows_read_total",
            "Rows read from sources, by store engine.",
            &["engine"],
        );
        let rows_written = counter_vec(
            &registry,
            "sluice_rows_written_total",
            "Rows written into targets, by store engine.",
            &["engine"],
        );
        let source_rows_read = counter_vec(
            &registry,
            "sluice_source_rows_read_total",
            "Rows read from each source, by flow input name and source name.",
            &["flow_input", "source"],
        );
        let restarts = IntCounter::new(
            "sluice_supervisor_restarts_total",
            "Crashed flows restarted by the supervisor.",
        )
        .expect("a valid metric definition");
        registry
            .register(Box::new(restarts.clone()))
            .expect("metric names are unique");
        let persister_batch = histogram(
            &registry,
            "sluice_persister_batch_size",
            "Flow outputs written per Persister write.",
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0, 1000.0],
        );
        let persister_write = histogram(
            &registry,
            "sluice_persister_write_seconds",
            "Latency of one Persister write (all its flow outputs in one transaction).",
            vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ],
        );
        let http_requests = counter_vec(
            &registry,
            "sluice_http_requests_total",
            "HTTP requests, by method, route pattern and status code.",
            &["method", "route", "status"],
        );
        let http_duration = histogram_vec(
            &registry,
            "sluice_http_request_duration_seconds",
            "Time to the response head, by method and route pattern.",
            &["method", "route"],
            prometheus::DEFAULT_BUCKETS.to_vec(),
        );
        let event_followers = IntGauge::new(
            "sluice_event_followers",
            "Open live-event streams (GET /flows/{id}/events).",
        )
        .expect("a valid metric definition");
        registry
            .register(Box::new(event_followers.clone()))
            .expect("metric names are unique");
        let checks = counter_vec(
            &registry,
            "sluice_checks_total",
            "Checks that ran to a verdict, by result: passed, failed (an error check), warned (a warn check).",
            &["result"],
        );
        let leases = counter_vec(
            &registry,
            "sluice_leases_total",
            "Several instances on one PostgreSQL metadata database: flows this instance claimed, took over from an instance that stopped renewing its lease (taken_over, also counted as claimed), or lost to another instance.",
            &["event"],
        );
        for event in LEASE_EVENTS {
            leases.with_label_values(&[event]);
        }
        for result in CHECK_RESULTS {
            checks.with_label_values(&[&result.as_str().to_lowercase()]);
        }
        for state in ALL_STATES {
            flows.with_label_values(&[state.as_str()]).set(0);
        }
        for kind in ALL_KINDS {
            let k = [kind.as_str()];
            tasks_started.with_label_values(&k);
            tasks_completed.with_label_values(&k);
            tasks_failed.with_label_values(&k);
        }
        Metrics {
            registry,
            flows,
            tasks_started,
            tasks_completed,
            tasks_failed,
            task_duration,
            rows_read,
            rows_written,
            source_rows_read,
            restarts,
            persister_batch,
            persister_write,
            http_requests,
            http_duration,
            event_followers,
            checks,
            leases,
        }
    }

    /// Counts what an event says about tasks and restarts. `picture` is the flow's picture the
    /// event applies to (for the task's kind).
    pub fn observe(&self, picture: &FlowPicture, event: &FlowEvent) {
        let kind_of = |task: &str| {
            picture
                .tasks
                .iter()
                .find(|t| t.name == task)
                .map(|t| t.kind.as_str())
        };
        match event {
            FlowEvent::TaskStarted { task, .. } => {
                if let Some(kind) = kind_of(task) {
                    self.tasks_started.with_label_values(&[kind]).inc();
                }
            }
            FlowEvent::TaskCompleted { task, elapsed, .. } => {
                if let Some(kind) = kind_of(task) {
                    self.tasks_completed.with_label_values(&[kind]).inc();
                    self.task_duration
                        .with_label_values(&[kind])
                        .observe(elapsed.as_secs_f64());
                }
            }
            FlowEvent::TaskFailed {
                task, retry_in: None, ..
            } => {
                if let Some(kind) = kind_of(task) {
                    self.tasks_failed.with_label_values(&[kind]).inc();
                }
            }
            FlowEvent::Crashed {
                retry_in: Some(_), ..
            } => self.restarts.inc(),
            FlowEvent::CheckFinished { state, .. } if CHECK_RESULTS.contains(state) => {
                self.checks
                    .with_label_values(&[&state.as_str().to_lowercase()])
                    .inc();
            }
            _ => {}
        }
    }

    /// Counts rows a task moved: read from a source store, or written into a target store.
    pub fn rows_moved(&self, engine: StoreEngine, direction: RowsDirection, rows: u64) {
        let metric = match direction {
            RowsDirection::Read => &self.rows_read,
            RowsDirection::Written => &self.rows_written,
        };
        metric.with_label_values(&[engine.as_str()]).inc_by(rows);
    }

    /// Counts rows that source `source` of flow input `flow_input` read.
    pub fn source_rows_read(&self, flow_input: &str, source: &str, rows: u64) {
        self.source_rows_read
            .with_label_values(&[flow_input, source])
            .inc_by(rows);
    }

    /// One Persister write of `batch` flow outputs that took `took`.
    pub fn persisted(&self, batch: usize, took: Duration) {
        self.persister_batch.observe(batch as f64);
        self.persister_write.observe(took.as_secs_f64());
    }

    /// Sets the flows-by-state gauge (states missing from `counts` are 0).
    pub fn set_flow_counts(&self, counts: &[(FlowState, i64)]) {
        for state in ALL_STATES {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            self.flows.with_label_values(&[state.as_str()]).set(n);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec fails only on metric families that break the format's rules,
        // which the definitions above do not.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Which way rows moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsDirection {
    Read,
    Written,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dag::{Dag, DagNode};

    #[test]
    fn events_move_the_counters() {
        let m = Metrics::new();
        let dag = Dag::build(vec![DagNode::new("a", NodeKind::Ingest, vec![])]).unwrap();
        let p = FlowPicture::new_ready(1, &dag, 10);
        m.observe(
            &p,
            &FlowEvent::TaskStarted {
                task: "a".into(),
                attempt: 1,
            },
        );
        m.observe(
            &p,
            &FlowEvent::TaskCompleted {
                task: "a".into(),
                rows: 3,
                elapsed: Duration::from_millis(20),
            },
        );
        m.rows_moved(StoreEngine::Csv, RowsDirection::Read, 3);
        m.source_rows_read("shop", "orders", 5);
        m.persisted(2, Duration::from_millis(1));
        m.set_flow_counts(&[(FlowState::Completed, 4)]);
        let text = m.render();
        for line in [
            "sluice_tasks_started_total{kind=\"ingest\"} 1",
            "sluice_tasks_completed_total{kind=\"ingest\"} 1",
            "sluice_tasks_failed_total{kind=\"ingest\"} 0",
            "sluice_task_duration_seconds_count{kind=\"ingest\"} 1",
            "sluice_rows_read_total{engine=\"csv\"} 3",
            "sluice_source_rows_read_total{flow_input=\"shop\",source=\"orders\"} 5",
            "sluice_persister_batch_size_count 1",
            "sluice_flows{state=\"COMPLETED\"} 4",
            "sluice_flows{state=\"RUNNING\"} 0",
            "sluice_checks_total{result=\"failed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Two registries side by side do not clash.
        let other = Metrics::new();
        assert!(!other.render().contains("sluice_rows_read_total{"));
    }
}
