//! Migrations of Sluice's metadata database. The same migrations serve SQLite and PostgreSQL.
//! Run at start-up by the service, or by hand with `sluice migrate`.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_create_tables;
mod m20261201_000002_incremental;
mod m20261201_000003_checks;
mod m20261201_000004_leases;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_tables::Migration),
            Box::new(m20261201_000002_incremental::Migration),
            Box::new(m20261201_000003_checks::Migration),
            Box::new(m20261201_000004_leases::Migration),
        ]
    }
}
