//! Reading a MySQL source: each column's declared type (`SHOW COLUMNS`, or the description
//! of the prepared query), then the rows over the text protocol in a read-only transaction,
//! parsed into batches on a task of its own while the reader consumes them.

use std::collections::HashMap;

use async_trait::async_trait;
use datafusion::arrow::datatypes::*;
use futures::TryStreamExt;
use sqlx::mysql::MySqlTypeInfo;
use sqlx::{
    AssertSqlSafe, Column, ColumnOrigin, Connection, Executor, MySql, MySqlConnection, SqlSafeStr, Statement,
    TypeInfo,
};

use super::{bytes_of, connect, quote_ident, quote_part, show_columns, table_exists, Conn};
use crate::connectors::pools::{self, Pools};
use crate::connectors::relational::{
    bare_query, source_query_error, spawn_read, split_table, sql_error, timestamp, unknown_cursor_column,
    BatchBuilder, BatchSender, CursorSource, Guarded,
};
use crate::connectors::{ConnectorError, CursorFilter, IoContext, Opened};
use crate::domain::spec::{Source, SourceRead};
use crate::domain::store::DataStore;

/// The Arrow type of a declared MySQL column type, and how the read selects it; `None` for a
/// type Sluice cannot carry.
fn plan_column(name: &str, declared: &str) -> Option<(DataType, String)> {
    let d = declared.trim().to_ascii_lowercase();
    let col = format!("q.{}", quote_part(name));
    let base = d.split(['(', ' ']).next().unwrap_or("");
    let unsigned = d.contains("unsigned");
    let args = d
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(a, _)| a)
        .unwrap_or("");
    let native = |dt: DataType| Some((dt, col.clone()));
    match base {
        "tinyint" if args == "1" && !unsigned => native(DataType::Boolean),
        "bool" | "boolean" => native(DataType::Boolean),
        "tinyint" if unsigned => native(DataType::Int16),
        "tinyint" => native(DataType::Int8),
        "smallint" if unsigned => native(DataType::Int32),
        "smallint" => native(DataType::Int16),
        "mediumint" => native(DataType::Int32),
        "int" | "integer" if unsigned => native(DataType::Int64),
        "int" | "integer" => native(DataType::Int32),
        "bigint" if unsigned => native(DataType::Decimal128(20, 0)),
        "bigint" => native(DataType::Int64),
        "year" => native(DataType::Int16),
        "decimal" | "numeric" | "dec" | "fixed" => {
            let (p, s) = args.split_once(',').unwrap_or((args, "0"));
            match (p.trim().parse::<u8>(), s.trim().parse::<i8>()) {
                (Ok(p), Ok(s)) if (1..=38).contains(&p) && s >= 0 && s as u8 <= p => {
                    native(DataType::Decimal128(p, s))
                }
                _ => native(DataType::Utf8),
            }
        }
        "float" => native(DataType::Float32),
        "double" | "real" => native(DataType::Float64),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" | "json"
        | "uuid" | "inet4" | "inet6" => native(DataType::Utf8),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => native(DataType::Binary),
        "bit" => Some((DataType::Int64, format!("CAST({col} AS UNSIGNED)"))),
        "date" => native(DataType::Date32),
        "time" => native(DataType::Time64(TimeUnit::Microsecond)),
        "datetime" => native(timestamp(false)),
        "timestamp" => native(timestamp(true)),
        _ => None,
    }
}

/// A column type as a prepared statement's description gives it, spelled like a declared
/// type for `plan_column`. The description carries no precision for a computed decimal (it
/// becomes exact text) and tells text from binary strings by the column's collation.
fn described_type(ty: &MySqlTypeInfo) -> String {
    if <str as sqlx::Type<MySql>>::compatible(ty) {
        return "text".into();
    }
    if <[u8] as sqlx::Type<MySql>>::compatible(ty) {
        return "blob".into();
    }
    match ty.name() {
        // `SELECT NULL`: a column of no type, read as text.
        "NULL" => "text".into(),
        name => name.to_ascii_lowercase(),
    }
}

pub struct MysqlSource {
    conn: Conn,
}

impl MysqlSource {
    pub fn new(store: &DataStore, pools: &Pools) -> Result<Self, ConnectorError> {
        Ok(MysqlSource {
            conn: connect(store, pools)?,
        })
    }

    async fn describe(
        &self,
        conn: &mut MySqlConnection,
        source: &Source,
    ) -> Result<(Vec<(String, String)>, Option<u64>, String), ConnectorError> {
        match source.read() {
            SourceRead::Table(table) => {
                if !table_exists(conn, table)
                    .await
                    .map_err(self.conn.err("looking up the table"))?
                {
                    let known: Vec<String> = sqlx::query_scalar(
                        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()",
                    )
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap_or_default();
                    let hint =
                        crate::domain::names::did_you_mean_hint(table, known.iter().map(String::as_str));
                    return Err(ConnectorError::permanent(format!(
                        "table {table:?} does not exist in {}{hint}",
                        pools::describe(&self.conn.store)
                    )));
                }
                let cols = show_columns(conn, table)
                    .await
                    .map_err(self.conn.err("reading the table's columns"))?;
                let (schema, name) = split_table(table);
                let estimate: Option<u64> = sqlx::query_scalar(
                    "SELECT CAST(TABLE_ROWS AS SIGNED) FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
                )
                .bind(schema)
                .bind(name)
                .fetch_optional(&mut *conn)
                .await
                .ok()
                .flatten()
                .flatten()
                .map(|n: i64| n.max(0) as u64);
                Ok((cols, estimate, format!("SELECT * FROM {}", quote_ident(table))))
            }
            SourceRead::Query(q) => {
                let q = bare_query(q).to_string();
                let secret = self.conn.store.password.as_ref();
                // The result's columns as MySQL describes the prepared query. Preparing runs
                // nothing, and a prepared statement is exactly one statement, so the query
                // cannot smuggle in a second one (`; COMMIT; DROP ...`). (A temporary table
                // made from the query would type it too, but MySQL evaluates parts of a query
                // while it creates one, and a read-only transaction refuses to.)
                let mut tx = conn
                    .begin_with("START TRANSACTION READ ONLY")
                    .await
                    .map_err(self.conn.err("starting a read-only transaction"))?;
                let described = (&mut *tx)
                    .prepare(AssertSqlSafe(q.clone()).into_sql_str())
                    .await
                    .map_err(|e| source_query_error(e, secret))?;
                // The driver keeps prepared statements with their description; a later read of
                // the same query must not get this one's (the tables may have changed since).
                tx.clear_cached_statements()
                    .await
                    .map_err(self.conn.err("describing the query"))?;
                // A column read straight from a table has that column's declared type.
                let mut tables: HashMap<String, Vec<(String, String)>> = HashMap::new();
                let mut cols = Vec::with_capacity(described.columns().len());
                for column in described.columns() {
                    let declared = match column.origin() {
                        ColumnOrigin::Table(origin) => {
                            if !tables.contains_key(&*origin.table) {
                                // A view or table the server names but SHOW COLUMNS cannot
                                // read: the description's type will do.
                                let found = show_columns(&mut tx, &origin.table).await.unwrap_or_default();
                                tables.insert(origin.table.to_string(), found);
                            }
                            tables[&*origin.table]
                                .iter()
                                .find(|(n, _)| n.eq_ignore_ascii_case(&origin.name))
                                .map(|(_, ty)| ty.clone())
                        }
                        _ => None,
                    };
                    let declared = declared.unwrap_or_else(|| described_type(column.type_info()));
                    cols.push((column.name().to_string(), declared));
                }
                tx.commit().await.map_err(self.conn.err("describing the query"))?;
                Ok((cols, None, q))
            }
            SourceRead::Path(_) => Err(ConnectorError::permanent(
                "a MySQL store is read by table or query",
            )),
        }
    }
}

/// The type a cursor's mark is cast to before it is compared with a column declared `declared`.
fn cursor_cast(declared: &str) -> Option<String> {
    let d = declared.trim().to_ascii_lowercase();
    let base = d.split(['(', ' ']).next().unwrap_or_default();
    Some(match base {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" if d.contains("unsigned") => {
            "UNSIGNED".to_string()
        }
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => "SIGNED".to_string(),
        "decimal" | "numeric" => d.replace("unsigned", "").trim().to_ascii_uppercase(),
        "date" => "DATE".to_string(),
        "datetime" | "timestamp" => "DATETIME(6)".to_string(),
        _ => return None,
    })
}

#[async_trait]
impl CursorSource for MysqlSource {
    async fn read(
        &self,
        source: &Source,
        filter: Option<&CursorFilter>,
        ctx: &IoContext,
    ) -> Result<Opened, ConnectorError> {
        let mut conn = Guarded::new(self.conn.acquire().await?);
        let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
            .fetch_one(&mut *conn.conn)
            .await
            .map_err(self.conn.err("query"))?;
        let (declared, estimated_rows, inner) = self.describe(&mut conn.conn, source).await?;
        if declared.is_empty() {
            return Err(ConnectorError::permanent("the source has no columns"));
        }
        let mut fields = Vec::new();
        let mut exprs = Vec::new();
        for (name, ty) in &declared {
            let Some((dt, expr)) = plan_column(name, ty) else {
                return Err(ConnectorError::permanent(format!(
                    "column {name:?} has type {ty}, which Sluice cannot carry (convert it in a query, \
                     e.g. CAST({name} AS CHAR))"
                )));
            };
            fields.push(Field::new(name, dt, true));
            exprs.push(expr);
        }
        let plain = exprs
            .iter()
            .zip(&declared)
            .all(|(e, (n, _))| *e == format!("q.{}", quote_part(n)));
        let mut predicate = String::new();
        if let Some(f) = filter {
            let Some((name, ty)) = declared.iter().find(|(n, _)| n.eq_ignore_ascii_case(&f.column)) else {
                let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
                return Err(unknown_cursor_column(f, source, &names));
            };
            if let Some(after) = f.after_text() {
                let cast = cursor_cast(ty).ok_or_else(|| {
                    ConnectorError::permanent(format!(
                        "cursor column {name:?} of source {} is {ty}: a cursor is an integer, decimal, date or timestamp column",
                        source.name
                    ))
                })?;
                // The mark, bound (never spliced) into a session variable the read compares
                // with; timestamps in the session's UTC.
                let after = after.trim_end_matches('Z').replacen('T', " ", 1);
                sqlx::query(AssertSqlSafe(format!(
                    "SET @sluice_cursor_after = CAST(? AS {cast})"
                )))
                .bind(after)
                .execute(&mut *conn.conn)
                .await
                .map_err(self.conn.err("setting the cursor's mark"))?;
                predicate = format!(" WHERE q.{} >= @sluice_cursor_after", quote_part(name));
            }
        }
        let sql = if plain && predicate.is_empty() {
            inner
        } else {
            format!("SELECT {} FROM (\n{inner}\n) AS q{predicate}", exprs.join(", "))
        };
        let builder = BatchBuilder::new(fields, ctx.batch_size);
        let schema = builder.schema.clone();
        let cancel = ctx.cancel.clone();
        let pool = self.conn.pool.clone();
        let secret = self.conn.store.password.clone();
        let read = |tx: BatchSender| async move {
            let mut builder = builder;
            let outcome = read_rows(&mut conn.conn, sql, &mut builder, &tx, &cancel, secret.as_ref()).await;
            (conn, outcome)
        };
        let kill_on_server = async move {
            let _ = sqlx::raw_sql(AssertSqlSafe(format!("KILL QUERY {id}")))
                .execute(&pool)
                .await;
        };
        Ok(spawn_read(schema, estimated_rows, read, kill_on_server))
    }
}

/// Runs `sql` in a read-only transaction (sources only read: a query that tries to write,
/// through a function, `FOR UPDATE` or otherwise, is refused by MySQL) and streams its rows
/// into batches. `Ok(true)` when it read everything, `Ok(false)` when it stopped because of
/// cancellation or because nobody reads any more.
async fn read_rows(
    conn: &mut MySqlConnection,
    sql: String,
    builder: &mut BatchBuilder,
    tx: &BatchSender,
    cancel: &tokio_util::sync::CancellationToken,
    secret: Option<&crate::secrets::Secret>,
) -> Result<bool, ConnectorError> {
    let mut read_only = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Ok(false),
        t = conn.begin_with("START TRANSACTION READ ONLY") => {
            t.map_err(|e| sql_error("starting a read-only transaction", e, secret))?
        }
    };
    let complete = fetch_batches(&mut read_only, sql, builder, tx, cancel, secret).await?;
    if complete {
        read_only
            .commit()
            .await
            .map_err(|e| sql_error("ending the read-only transaction", e, secret))?;
    }
    Ok(complete)
}

/// Streams the rows of `sql` into batches; see `read_rows`.
async fn fetch_batches(
    conn: &mut MySqlConnection,
    sql: String,
    builder: &mut BatchBuilder,
    tx: &BatchSender,
    cancel: &tokio_util::sync::CancellationToken,
    secret: Option<&crate::secrets::Secret>,
) -> Result<bool, ConnectorError> {
    // The text protocol runs every statement of a text, but `sql` is one: a table's `SELECT`,
    // or a query that MySQL prepared alone as one statement (see `describe`).
    let mut rows = sqlx::raw_sql(AssertSqlSafe(sql)).fetch(&mut *conn);
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(false),
            _ = tx.closed() => return Ok(false),
            r = rows.try_next() => r.map_err(|e| source_query_error(e, secret))?,
        };
        let Some(row) = next else { break };
        for i in 0..builder.cols.len() {
            match bytes_of(&row, i) {
                None => builder.cols[i].append_null(),
                Some(v) => {
                    if let Err(why) = builder.cols[i].append_mysql_text(v) {
                        return Err(builder.value_error(i, why));
                    }
                }
            }
        }
        builder.rows += 1;
        if !builder.send_when_full(tx, cancel).await? {
            return Ok(false);
        }
    }
    builder.send_rest(tx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_map_to_arrow() {
        let t = |d: &str| plan_column("c", d).map(|(dt, _)| dt);
        assert_eq!(t("tinyint(1)"), Some(DataType::Boolean));
        assert_eq!(t("tinyint(4)"), Some(DataType::Int8));
        assert_eq!(t("int(10) unsigned"), Some(DataType::Int64));
        assert_eq!(t("bigint(20) unsigned"), Some(DataType::Decimal128(20, 0)));
        assert_eq!(t("decimal(12,2)"), Some(DataType::Decimal128(12, 2)));
        assert_eq!(t("decimal(65,2)"), Some(DataType::Utf8));
        assert_eq!(t("enum('a','b')"), Some(DataType::Utf8));
        assert_eq!(t("datetime(6)"), Some(timestamp(false)));
        assert_eq!(t("timestamp"), Some(timestamp(true)));
        assert_eq!(t("geometry"), None);
    }
}
