//! Incremental sources: what each cursor source of a flow read (`flow_output.cursors`, part of
//! the one mutable table), and whether a flow ignores the marks (`flow.full_refresh`, fixed
//! when the flow is created).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(FlowOutput::Table)
                    .add_column(json_null(FlowOutput::Cursors))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Flow::Table)
                    .add_column(boolean(Flow::FullRefresh).default(false))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Flow::Table)
                    .drop_column(Flow::FullRefresh)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(FlowOutput::Table)
                    .drop_column(FlowOutput::Cursors)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum FlowOutput {
    Table,
    Cursors,
}

#[derive(DeriveIden)]
enum Flow {
    Table,
    FullRefresh,
}
