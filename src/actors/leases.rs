//! This instance's leases on flows, when several instances share one PostgreSQL metadata
//! database (`repo::leases` has the SQL). The supervisor claims flows with it, renews what it
//! holds, acts on cancels asked through other instances and hands its flows back when it
//! stops; a FlowActor confirms its lease just before it publishes. With SQLite metadata there
//! is one process and no `Leases` at all.

use std::time::Duration;

use sea_orm::{DatabaseBackend, DatabaseConnection};
use sqlx::PgPool;

use crate::repo::leases::{self, Claimed};
use crate::repo::RepoError;

pub struct Leases {
    pool: PgPool,
    instance: String,
    lease: Duration,
}

impl Leases {
    /// Leases for `instance` lasting `lease`, when the metadata database is PostgreSQL.
    pub fn for_database(db: &DatabaseConnection, instance: String, lease: Duration) -> Option<Leases> {
        (db.get_database_backend() == DatabaseBackend::Postgres).then(|| Leases {
            pool: db.get_postgres_connection_pool().clone(),
            instance,
            lease,
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// How long a lease lasts unless renewed.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often the leases held are renewed: three times per lease.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    /// Holds this instance's name for the life of the process (see
    /// `repo::leases::hold_instance_name`); `None` when another live process has it.
    pub async fn hold_name(&self) -> Result<Option<sqlx::PgConnection>, RepoError> {
        leases::hold_instance_name(&self.pool, &self.instance).await
    }

    /// Claims the oldest claimable flow (this instance holds `held`).
    pub async fn claim_next(&self, held: &[i64]) -> Result<Option<Claimed>, RepoError> {
        leases::claim_next(&self.pool, &self.instance, self.lease, held).await
    }

    /// Claims flow `flow_id` if nobody runs it.
    pub async fn claim(&self, flow_id: i64) -> Result<Option<Claimed>, RepoError> {
        leases::claim_flow(&self.pool, &self.instance, self.lease, flow_id).await
    }

    /// Renews the leases on `flows`; returns those still held.
    pub async fn renew(&self, flows: &[i64]) -> Result<Vec<i64>, RepoError> {
        leases::renew(&self.pool, &self.instance, self.lease, flows).await
    }

    /// Whether this instance still holds flow `flow_id` (renewing its lease if so).
    pub async fn confirm(&self, flow_id: i64) -> Result<bool, RepoError> {
        leases::confirm(&self.pool, &self.instance, self.lease, flow_id).await
    }

    /// Hands `flows` back: another instance may claim them at once.
    pub async fn release(&self, flows: &[i64]) -> Result<(), RepoError> {
        leases::release(&self.pool, &self.instance, flows).await
    }

    /// Records a cancel of `flow_id`; returns the instance running it, if one holds a live lease.
    pub async fn request_cancel(&self, flow_id: i64) -> Result<Option<String>, RepoError> {
        leases::request_cancel(&self.pool, flow_id).await
    }

    /// Which of `flows` have a cancel asked for.
    pub async fn cancels_requested(&self, flows: &[i64]) -> Result<Vec<i64>, RepoError> {
        leases::cancels_requested(&self.pool, &self.instance, flows).await
    }
}
