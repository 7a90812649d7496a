use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DataStore::Table)
                    .if_not_exists()
                    .col(big_pk_auto(DataStore::Id))
                    .col(timestamp_with_time_zone(DataStore::CreatedUtc))
                    .col(string_len_uniq(DataStore::Name, 63))
                    .col(string_len(DataStore::Kind, 32))
                    .col(string_len(DataStore::Engine, 32))
                    .col(json(DataStore::Connection))
                    .col(text_null(DataStore::PasswordSealed))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(FlowInput::Table)
                    .if_not_exists()
                    .col(big_pk_auto(FlowInput::Id))
                    .col(timestamp_with_time_zone(FlowInput::CreatedUtc))
                    .col(string_len(FlowInput::Name, 63))
                    .col(json(FlowInput::SourceStoreIds))
                    .col(big_integer(FlowInput::TargetStoreId))
                    .col(json(FlowInput::Sources))
                    .col(json(FlowInput::Transforms))
                    .col(json(FlowInput::Outputs))
                    .col(json(FlowInput::Options))
                    .col(json(FlowInput::Dag))
                    .foreign_key(
                        ForeignKey::create()
                            .from(FlowInput::Table, FlowInput::TargetStoreId)
                            .to(DataStore::Table, DataStore::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(FlowOutput::Table)
                    .if_not_exists()
                    .col(big_pk_auto(FlowOutput::Id))
                    .col(timestamp_with_time_zone(FlowOutput::CreatedUtc))
                    .col(timestamp_with_time_zone(FlowOutput::UpdatedUtc))
                    .col(string_len(FlowOutput::State, 16))
                    .col(json(FlowOutput::Progress))
                    .col(json(FlowOutput::Logs))
                    .col(json(FlowOutput::Errors))
                    .col(json(FlowOutput::Tasks))
                    .col(timestamp_with_time_zone_null(FlowOutput::StartedUtc))
                    .col(timestamp_with_time_zone_null(FlowOutput::FinishedUtc))
                    .col(integer(FlowOutput::Restarts).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_flow_output_state")
                    .table(FlowOutput::Table)
                    .col(FlowOutput::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Flow::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Flow::Id))
                    .col(timestamp_with_time_zone(Flow::CreatedUtc))
                    .col(big_integer(Flow::FlowInputId))
                    .col(big_integer_uniq(Flow::FlowOutputId))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Flow::Table, Flow::FlowInputId)
                            .to(FlowInput::Table, FlowInput::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Flow::Table, Flow::FlowOutputId)
                            .to(FlowOutput::Table, FlowOutput::Id),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Flow::Table.into_iden(),
            FlowOutput::Table.into_iden(),
            FlowInput::Table.into_iden(),
            DataStore::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

// SeaORM names a table's columns after it: `FlowInput::FlowInputId` reads as intended.
#[allow(clippy::enum_variant_names)]
#[derive(DeriveIden)]
enum DataStore {
    Table,
    Id,
    CreatedUtc,
    Name,
    Kind,
    Engine,
    Connection,
    PasswordSealed,
}

// SeaORM names a table's columns after it: `FlowInput::FlowInputId` reads as intended.
#[allow(clippy::enum_variant_names)]
#[derive(DeriveIden)]
enum FlowInput {
    Table,
    Id,
    CreatedUtc,
    Name,
    SourceStoreIds,
    TargetStoreId,
    Sources,
    Transforms,
    Outputs,
    Options,
    Dag,
}

// SeaORM names a table's columns after it: `FlowInput::FlowInputId` reads as intended.
#[allow(clippy::enum_variant_names)]
#[derive(DeriveIden)]
enum FlowOutput {
    Table,
    Id,
    CreatedUtc,
    UpdatedUtc,
    State,
    Progress,
    Logs,
    Errors,
    Tasks,
    StartedUtc,
    FinishedUtc,
    Restarts,
}

// SeaORM names a table's columns after it: `FlowInput::FlowInputId` reads as intended.
#[allow(clippy::enum_variant_names)]
#[derive(DeriveIden)]
enum Flow {
    Table,
    Id,
    CreatedUtc,
    FlowInputId,
    FlowOutputId,
}
