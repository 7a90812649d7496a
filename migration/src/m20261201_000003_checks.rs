//! Checks (issue 12): a flow input's `checks` and a flow output's check results, both JSON,
//! NULL when there are none (every row written before stays valid).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(FlowInput::Table)
                    .add_column(json_null(FlowInput::Checks))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(FlowOutput::Table)
                    .add_column(json_null(FlowOutput::Checks))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(FlowOutput::Table)
                    .drop_column(FlowOutput::Checks)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(FlowInput::Table)
                    .drop_column(FlowInput::Checks)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum FlowInput {
    Table,
    Checks,
}

#[derive(DeriveIden)]
enum FlowOutput {
    Table,
    Checks,
}
