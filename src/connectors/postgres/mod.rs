//! PostgreSQL (`relational_db` / `postgres`).
//!
//! Reads run `COPY (query) TO STDOUT (FORMAT binary)` in a read-only transaction and decode the
//! stream straight into Arrow builders, batch by batch, so memory stays flat however large the
//! table; column types come from the catalog (through a temporary view for queries), the
//! expected row count from the planner. Cancelling stops the read and cancels the query on the
//! server.
//!
//! Loads stage the rows with `COPY ... FROM STDIN (FORMAT binary, FREEZE)` into a staging
//! table created in the same transaction; publishing swaps (`replace`) or inserts (`append`)
//! every staged table of the flow in one transaction.
//!
//! `source` reads, `sink` stages and publishes, `copy_codec` is the binary COPY format
//! both speak (tuples in, Arrow columns out: the column decoders are shared with MySQL's in
//! `relational`).

mod copy_codec;
mod sink;
mod source;

use sqlx::Postgres;

pub use self::sink::PostgresSink;
pub use self::source::PostgresSource;
use super::pools::{pg_options, Pools};
use super::relational::DbConn;
use super::ConnectorError;
use crate::domain::store::DataStore;

/// Quotes an identifier per part: `sales.Orders` becomes `"sales"."Orders"`.
pub fn quote_ident(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

fn quote_ident_part(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

type Conn = DbConn<Postgres>;

fn connect(store: &DataStore, pools: &Pools) -> Result<Conn, ConnectorError> {
    Ok(DbConn {
        pool: pools.postgres(store)?,
        options: pg_options(store)?,
        store: store.clone(),
    })
}

/// Connects and asks the server's version.
pub async fn check(store: &DataStore, pools: &Pools) -> Result<String, ConnectorError> {
    let conn = connect(store, pools)?;
    let mut c = conn.acquire().await?;
    sqlx::query_scalar::<_, String>("SHOW server_version")
        .fetch_one(&mut *c)
        .await
        .map_err(conn.err("asking the server's version"))
}
