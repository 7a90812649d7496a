//! The one mutable table: a flow's live state. Only the Persister actor updates it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "flow_output")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub created_utc: DateTimeUtc,
    pub updated_utc: DateTimeUtc,
    /// `READY`, `RUNNING`, `CANCELLED`, `FAILED` or `COMPLETED`; the last three are final.
    #[sea_orm(indexed)]
    pub state: String,
    /// `{"percent", "updated_utc"}`.
    pub progress: Json,
    /// `{"lines": [...], "updated_utc", "dropped"}`.
    pub logs: Json,
    /// `{"lines": [...], "updated_utc"}`.
    pub errors: Json,
    /// Per-task status, in the DAG's order.
    pub tasks: Json,
    /// Per-check status, in the flow input's order; NULL when the flow has no checks.
    pub checks: Option<Json>,
    pub started_utc: Option<DateTimeUtc>,
    pub finished_utc: Option<DateTimeUtc>,
    /// How many times the supervisor restarted this flow after a crash.
    pub restarts: i32,
    /// What each cursor source read, by source name (see `output.cursors`); NULL without any.
    pub cursors: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
