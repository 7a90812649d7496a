//! Response bodies, exactly as API.md shows them. Built from what the services return (decoded
//! records and domain values); never carry a secret.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::checks::Check;
use crate::domain::dag::Dag;
use crate::domain::flow::{CheckStatus, FlowPicture, FlowState, Lines, Progress, TaskStatus};
use crate::domain::spec::{FlowInputSpec, FlowOptions, Output, Source, Transform};
use crate::domain::store::Connection;
use crate::domain::time::rfc3339;
use crate::services::data_stores::{CheckReport, DataStoreRecord};
use crate::services::flow_inputs::FlowInputRecord;
use crate::services::flows::FlowRecord;
use crate::services::Page;

#[derive(Serialize)]
pub struct List<T: Serialize> {
    pub items: Vec<T>,
    pub next_before_id: Option<i64>,
}

impl<T: Serialize> List<T> {
    pub fn from_page<M>(page: Page<M>, f: impl Fn(M) -> T) -> Self {
        List {
            items: page.items.into_iter().map(f).collect(),
            next_before_id: page.next_before_id,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DataStoreView {
    pub id: i64,
    #[serde(with = "rfc3339")]
    pub created_utc: DateTime<Utc>,
    pub name: String,
    pub kind: String,
    pub engine: String,
    pub connection: ConnectionView,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ConnectionView {
    Db {
        host: String,
        port: u16,
        user: String,
        password_set: bool,
        db_name: String,
    },
    File {
        path: String,
    },
}

impl From<DataStoreRecord> for DataStoreView {
    fn from(r: DataStoreRecord) -> Self {
        let connection = match r.connection {
            Connection::Db(db) => ConnectionView::Db {
                host: db.host,
                port: db.port,
                user: db.user,
                password_set: r.password_set,
                db_name: db.db_name,
            },
            Connection::File(f) => ConnectionView::File { path: f.path },
        };
        DataStoreView {
            id: r.id,
            created_utc: r.created_utc,
            name: r.name,
            kind: r.kind,
            engine: r.engine,
            connection,
        }
    }
}

/// `POST /data-stores/{id}/check` when the store answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StoreCheckView {
    pub latency_ms: u64,
    /// The database server's version (for files: the engine that reads them).
    pub server_version: Option<String>,
}

impl From<CheckReport> for StoreCheckView {
    fn from(r: CheckReport) -> Self {
        StoreCheckView {
            latency_ms: r.latency_ms,
            server_version: r.server_version,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct FlowInputView {
    pub id: i64,
    #[serde(with = "rfc3339")]
    pub created_utc: DateTime<Utc>,
    pub name: String,
    pub source_store_ids: Vec<i64>,
    pub target_store_id: i64,
    pub sources: Vec<Source>,
    pub transforms: Vec<Transform>,
    pub outputs: Vec<Output>,
    pub options: FlowOptions,
    /// Present when the input has checks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    pub dag: Dag,
}

impl From<FlowInputRecord> for FlowInputView {
    fn from(r: FlowInputRecord) -> Self {
        let FlowInputRecord {
            id,
            created_utc,
            spec,
            dag,
        } = r;
        FlowInputView {
            id,
            created_utc,
            name: spec.name,
            source_store_ids: spec.source_store_ids,
            target_store_id: spec.target_store_id,
            sources: spec.sources,
            transforms: spec.transforms,
            outputs: spec.outputs,
            options: spec.options,
            checks: spec.checks,
            dag,
        }
    }
}

/// `POST /flow-inputs?dry_run=true`: the input as a create would store it, without an id
/// (nothing is stored).
#[derive(Serialize, utoipa::ToSchema)]
pub struct PlannedFlowInputView {
    #[serde(with = "rfc3339")]
    pub created_utc: DateTime<Utc>,
    pub name: String,
    pub source_store_ids: Vec<i64>,
    pub target_store_id: i64,
    pub sources: Vec<Source>,
    pub transforms: Vec<Transform>,
    pub outputs: Vec<Output>,
    pub options: FlowOptions,
    /// Present when the input has checks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    pub dag: Dag,
}

impl PlannedFlowInputView {
    pub fn new(spec: FlowInputSpec, dag: Dag, created_utc: DateTime<Utc>) -> Self {
        PlannedFlowInputView {
            created_utc,
            name: spec.name,
            source_store_ids: spec.source_store_ids,
            target_store_id: spec.target_store_id,
            sources: spec.sources,
            transforms: spec.transforms,
            outputs: spec.outputs,
            options: spec.options,
            checks: spec.checks,
            dag,
        }
    }
}

/// A flow input in a list: no SQL, no DAG.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FlowInputSummary {
    pub id: i64,
    #[serde(with = "rfc3339")]
    pub created_utc: DateTime<Utc>,
    pub name: String,
    pub source_store_ids: Vec<i64>,
    pub target_store_id: i64,
    pub source_count: usize,
    pub transform_count: usize,
    pub output_count: usize,
}

impl From<FlowInputRecord> for FlowInputSummary {
    fn from(r: FlowInputRecord) -> Self {
        let spec = r.spec;
        FlowInputSummary {
            id: r.id,
            created_utc: r.created_utc,
            source_count: spec.sources.len(),
            transform_count: spec.transforms.len(),
            output_count: spec.outputs.len(),
            name: spec.name,
            source_store_ids: spec.source_store_ids,
            target_store_id: spec.target_store_id,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct FlowView {
    pub id: i64,
    #[serde(with = "rfc3339")]
    pub created_utc: DateTime<Utc>,
    pub flow_input_id: i64,
    pub flow_output_id: i64,
    pub output: OutputView,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OutputView {
    pub id: i64,
    #[serde(with = "rfc3339")]
    pub created_utc: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub updated_utc: DateTime<Utc>,
    pub state: FlowState,
    pub progress: Progress,
    pub logs: Lines,
    pub errors: Lines,
    pub tasks: Vec<TaskStatus>,
    /// The flow's checks and their results; present when its input has checks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,
    #[serde(with = "rfc3339::option")]
    pub started_utc: Option<DateTime<Utc>>,
    #[serde(with = "rfc3339::option")]
    pub finished_utc: Option<DateTime<Utc>>,
    pub restarts: i32,
    /// What each cursor source read (incremental inputs only).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schema(value_type = std::collections::HashMap<String, crate::domain::cursor::CursorEntry>)]
    pub cursors: crate::domain::cursor::Cursors,
}

impl From<FlowPicture> for OutputView {
    fn from(p: FlowPicture) -> Self {
        OutputView {
            id: p.output_id,
            created_utc: p.created_utc,
            updated_utc: p.updated_utc,
            state: p.state,
            progress: p.progress,
            logs: p.logs,
            errors: p.errors,
            tasks: p.tasks,
            checks: p.checks,
            started_utc: p.started_utc,
            finished_utc: p.finished_utc,
            restarts: p.restarts,
            cursors: p.cursors,
        }
    }
}

impl From<FlowRecord> for FlowView {
    fn from(r: FlowRecord) -> Self {
        FlowView {
            id: r.flow.id,
            created_utc: r.flow.created_utc,
            flow_input_id: r.flow.flow_input_id,
            flow_output_id: r.flow.flow_output_id,
            output: r.output.into(),
        }
    }
}

/// A flow in a list: state and progress, no logs or tasks.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FlowSummary {
    pub id: i64,
    #[serde(with = "rfc3339")]
    pub created_utc: DateTime<Utc>,
    pub flow_input_id: i64,
    pub flow_output_id: i64,
    pub output: OutputSummary,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OutputSummary {
    pub id: i64,
    #[serde(with = "rfc3339")]
    pub updated_utc: DateTime<Utc>,
    pub state: FlowState,
    pub progress: Progress,
    pub task_count: usize,
    pub error_count: usize,
    #[serde(with = "rfc3339::option")]
    pub started_utc: Option<DateTime<Utc>>,
    #[serde(with = "rfc3339::option")]
    pub finished_utc: Option<DateTime<Utc>>,
}

impl From<FlowRecord> for FlowSummary {
    fn from(r: FlowRecord) -> Self {
        let p = r.output;
        FlowSummary {
            id: r.flow.id,
            created_utc: r.flow.created_utc,
            flow_input_id: r.flow.flow_input_id,
            flow_output_id: r.flow.flow_output_id,
            output: OutputSummary {
                id: p.output_id,
                updated_utc: p.updated_utc,
                state: p.state,
                progress: p.progress,
                task_count: p.tasks.len(),
                error_count: p.errors.lines.len(),
                started_utc: p.started_utc,
                finished_utc: p.finished_utc,
            },
        }
    }
}
