//! One run of a flow input.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "flow")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub created_utc: DateTimeUtc,
    pub flow_input_id: i64,
    /// The flow's output row; created in the same transaction as the flow.
    #[sea_orm(unique)]
    pub flow_output_id: i64,
    /// Started with `full_refresh`: its cursor sources read everything.
    pub full_refresh: bool,
    /// The instance that holds the flow's lease (several instances on one PostgreSQL metadata
    /// database); NULL while no instance has claimed it, and always with SQLite metadata.
    pub owner: Option<String>,
    /// Until when `owner` holds the lease (the database's clock); another instance may claim
    /// the flow once it has passed.
    pub lease_expires_utc: Option<DateTimeUtc>,
    /// A cancel was asked for through some instance; the owner acts on it.
    pub cancel_requested: bool,
    /// The flow's input reads incremental sources: no instance claims it while an older flow
    /// of that input is unfinished.
    pub exclusive_input: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::flow_output::Entity",
        from = "Column::FlowOutputId",
        to = "super::flow_output::Column::Id"
    )]
    FlowOutput,
    #[sea_orm(
        belongs_to = "super::flow_input::Entity",
        from = "Column::FlowInputId",
        to = "super::flow_input::Column::Id"
    )]
    FlowInput,
}

impl Related<super::flow_output::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::FlowOutput.def()
    }
}

impl Related<super::flow_input::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::FlowInput.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
