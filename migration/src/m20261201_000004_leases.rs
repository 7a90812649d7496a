//! Several instances on one PostgreSQL metadata database (issue 14): a flow is claimed by one
//! instance at a time with a lease (`owner`, `lease_expires_utc`, renewed by the owner); a cancel
//! received by any instance is recorded (`cancel_requested`) for the owner to act on; and
//! `exclusive_input` says the flow's input is incremental, so that no instance claims it while
//! an older flow of that input is unfinished. Every row written before stays valid (no owner,
//! no cancel asked, not exclusive).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one added column per ALTER TABLE.
        let columns = [
            string_null(Flow::Owner),
            timestamp_with_time_zone_null(Flow::LeaseExpiresUtc),
            boolean(Flow::CancelRequested).default(false).to_owned(),
            boolean(Flow::ExclusiveInput).default(false).to_owned(),
        ];
        for column in columns {
            manager
                .alter_table(Table::alter().table(Flow::Table).add_column(column).to_owned())
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Flow::ExclusiveInput,
            Flow::CancelRequested,
            Flow::LeaseExpiresUtc,
            Flow::Owner,
        ] {
            manager
                .alter_table(Table::alter().table(Flow::Table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Flow {
    Table,
    Owner,
    LeaseExpiresUtc,
    CancelRequested,
    ExclusiveInput,
}
