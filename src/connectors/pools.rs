//! One bounded connection pool per database store, shared by every flow and by `/check`.
//! Pools are created on first use and connect lazily; they live as long as the engine (their
//! connections belong to the engine's runtime).

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Database, Pool};

use super::relational::sql_error;
use super::ConnectorError;
use crate::domain::store::{Connection as StoreConnection, DataStore, StoreEngine};

/// Connections per store: enough for a few flows' reads and loads at once, few enough that
/// many flows cannot exhaust the server.
pub const MAX_CONNECTIONS: u32 = 8;
/// How long a task waits for a free connection before its attempt fails (and is retried).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);
/// After this long without a connection, and none open, the server is tried directly so that
/// a refused connection is reported as such rather than as a pool timeout.
const PROBE_AFTER: Duration = Duration::from_millis(1500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
enum AnyPool {
    Postgres(PgPool),
    Mysql(MySqlPool),
}

/// The pools, by store id (stores never change after they are created).
#[derive(Clone, Default)]
pub struct Pools {
    inner: Arc<DashMap<i64, AnyPool>>,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools")
            .field("stores", &self.inner.len())
            .finish()
    }
}

fn db_connection(store: &DataStore) -> Result<&crate::domain::store::DbConnection, ConnectorError> {
    match &store.connection {
        StoreConnection::Db(c) => Ok(c),
        StoreConnection::File(_) => Err(ConnectorError::permanent(format!(
            "store {} has no database connection",
            store.name
        ))),
    }
}

/// Where a store is, for messages: `postgres 127.0.0.1:5432/shop as app` (never a password).
pub fn describe(store: &DataStore) -> String {
    match &store.connection {
        StoreConnection::Db(c) => format!(
            "{} {}:{}/{} as {}",
            store.engine.as_str(),
            c.host,
            c.port,
            c.db_name,
            c.user
        ),
        StoreConnection::File(f) => f.path.clone(),
    }
}

pub fn pg_options(store: &DataStore) -> Result<PgConnectOptions, ConnectorError> {
    let c = db_connection(store)?;
    let mut o = PgConnectOptions::new_without_pgpass()
        .host(&c.host)
        .port(c.port)
        .username(&c.user)
        .database(&c.db_name)
        .application_name("sluice")
        .options([("TimeZone", "UTC")])
        .disable_statement_logging();
    if let Some(p) = &store.password {
        o = o.password(p.expose());
    }
    Ok(o)
}

pub fn mysql_options(store: &DataStore) -> Result<MySqlConnectOptions, ConnectorError> {
    let c = db_connection(store)?;
    let mut o = MySqlConnectOptions::new()
        .host(&c.host)
        .port(c.port)
        .username(&c.user)
        .database(&c.db_name)
        .charset("utf8mb4")
        .timezone(Some("+00:00".to_string()))
        // Keep MySQL's own meaning of `||` in users' queries.
        .pipes_as_concat(false)
        .disable_statement_logging();
    if let Some(p) = &store.password {
        o = o.password(p.expose());
    }
    Ok(o)
}

impl Pools {
    pub fn postgres(&self, store: &DataStore) -> Result<PgPool, ConnectorError> {
        if let Some(AnyPool::Postgres(p)) = self.inner.get(&store.id).map(|p| p.clone()) {
            return Ok(p);
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(pg_options(store)?);
        let entry = self
            .inner
            .entry(store.id)
            .or_insert_with(|| AnyPool::Postgres(pool));
        match entry.value() {
            AnyPool::Postgres(p) => Ok(p.clone()),
            AnyPool::Mysql(_) => Err(ConnectorError::permanent("store engine changed")),
        }
    }

    pub fn mysql(&self, store: &DataStore) -> Result<MySqlPool, ConnectorError> {
        if let Some(AnyPool::Mysql(p)) = self.inner.get(&store.id).map(|p| p.clone()) {
            return Ok(p);
        }
        let pool = MySqlPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(mysql_options(store)?);
        let entry = self.inner.entry(store.id).or_insert_with(|| AnyPool::Mysql(pool));
        match entry.value() {
            AnyPool::Mysql(p) => Ok(p.clone()),
            AnyPool::Postgres(_) => Err(ConnectorError::permanent("store engine changed")),
        }
    }
}

/// A connection from `pool`. A refused connection makes sqlx wait for the whole acquire
/// timeout; so after a short wait the server is tried directly and its own error (refused,
/// unknown host, wrong password) is returned.
pub async fn acquire<DB: Database>(
    pool: &Pool<DB>,
    options: &<DB::Connection as Connection>::Options,
    store: &DataStore,
) -> Result<sqlx::pool::PoolConnection<DB>, ConnectorError> {
    let context = format!("connecting to {}", describe(store));
    let secret = store.password.as_ref();
    let acquire = pool.acquire();
    tokio::pin!(acquire);
    tokio::select! {
        r = &mut acquire => return r.map_err(|e| sql_error(&context, e, secret)),
        _ = tokio::time::sleep(PROBE_AFTER) => {}
    }
    // Still waiting: either every connection is busy or the server cannot be reached (sqlx
    // keeps retrying a refused connection until the acquire timeout). A direct try tells.
    {
        match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => return Err(sql_error(&context, e, secret)),
            Err(_) => {
                return Err(ConnectorError::transient(format!(
                    "{context}: no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )))
            }
        }
    }
    acquire.await.map_err(|e| sql_error(&context, e, secret))
}

/// Whether `engine` is served by these pools.
pub fn is_pooled(engine: StoreEngine) -> bool {
    matches!(engine, StoreEngine::Postgres | StoreEngine::Mysql)
}
