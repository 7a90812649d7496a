//! MySQL and MariaDB (`relational_db` / `mysql`).
//!
//! Reads stream the result over the text protocol (rows arrive as the server sends them), in a
//! read-only transaction, and parse each value by the column's declared type (`SHOW COLUMNS`;
//! for a query, the description of the prepared query), so decimals stay exact. Cancelling
//! stops the read and kills the query on the server (`KILL QUERY`).
//!
//! Loads stage the rows with multi-row `INSERT`s inside one transaction; publishing inserts
//! the staged rows of `append` loads (each in a transaction that also records the load, so a
//! resumed publish never appends twice) and swaps in the staged tables of `replace` loads with
//! one `RENAME TABLE` statement.
//!
//! `source` reads, `sink` stages and publishes, `literals` writes Arrow values as the
//! SQL literals the loads' `INSERT`s carry; this module holds the catalog look-ups both use.

mod literals;
mod sink;
mod source;

use sqlx::mysql::MySqlRow;
use sqlx::{AssertSqlSafe, Decode, MySql, MySqlConnection, Row, ValueRef};

pub use self::sink::MysqlSink;
pub use self::source::MysqlSource;
use super::pools::{mysql_options, Pools};
use super::relational::{split_table, DbConn};
use super::ConnectorError;
use crate::domain::store::DataStore;

/// Quotes an identifier per part with backticks: `shop.orders` becomes `` `shop`.`orders` ``.
pub fn quote_ident(name: &str) -> String {
    name.split('.').map(quote_part).collect::<Vec<_>>().join(".")
}

fn quote_part(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

type Conn = DbConn<MySql>;

fn connect(store: &DataStore, pools: &Pools) -> Result<Conn, ConnectorError> {
    Ok(DbConn {
        pool: pools.mysql(store)?,
        options: mysql_options(store)?,
        store: store.clone(),
    })
}

fn bytes_of(row: &MySqlRow, i: usize) -> Option<&[u8]> {
    let raw = row.try_get_raw(i).ok()?;
    if raw.is_null() {
        return None;
    }
    <&[u8] as Decode<MySql>>::decode(raw).ok()
}

fn text_of(row: &MySqlRow, i: usize) -> String {
    bytes_of(row, i)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// `(name, declared type)` of each column, from `SHOW COLUMNS`.
async fn show_columns(conn: &mut MySqlConnection, table: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::raw_sql(AssertSqlSafe(format!("SHOW COLUMNS FROM {}", quote_ident(table))))
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(|r| (text_of(r, 0), text_of(r, 1))).collect())
}

async fn table_exists(conn: &mut MySqlConnection, table: &str) -> Result<bool, sqlx::Error> {
    let (schema, name) = split_table(table);
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) \
         AND TABLE_NAME = ?",
    )
    .bind(schema)
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n > 0)
}

/// Connects and asks the server's version.
pub async fn check(store: &DataStore, pools: &Pools) -> Result<String, ConnectorError> {
    let conn = connect(store, pools)?;
    let mut c = conn.acquire().await?;
    sqlx::query_scalar::<_, String>("SELECT VERSION()")
        .fetch_one(&mut *c)
        .await
        .map_err(conn.err("asking the server's version"))
}
