//! The immutable description of one pipeline.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "flow_input")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub created_utc: DateTimeUtc,
    pub name: String,
    /// JSON array of data store ids the sources may read from.
    pub source_store_ids: Json,
    pub target_store_id: i64,
    /// JSON array of sources, as validated (defaults filled in).
    pub sources: Json,
    /// JSON array of `{name, sql}`.
    pub transforms: Json,
    /// JSON array of `{node, table, mode}` (defaults filled in).
    pub outputs: Json,
    /// JSON object of run options (defaults filled in).
    pub options: Json,
    /// The planned DAG: `{nodes, order}`.
    pub dag: Json,
    /// JSON array of checks (defaults filled in); NULL when there are none.
    pub checks: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
