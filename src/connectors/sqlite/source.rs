//! Reading a SQLite source: a table or one query on a read-only connection, typed by its
//! declarations where there are any, else by the storage classes of the first rows.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow, SqliteValueRef};
// Identifiers in these statements are quoted by `quote_ident`; values are bound.
use sqlx::{AssertSqlSafe, Column, ConnectOptions, Decode, Row, TypeInfo, ValueRef};

use super::{arrow_type_for_decl, db_error, declared_types, quote_ident, source_query_error, BUSY_TIMEOUT};
use crate::connectors::arrow_sql::SqlValue;
use crate::connectors::relational::{stream_from, BatchBuilder, CursorSource};
use crate::connectors::{store_path, ConnectorError, CursorFilter, IoContext, Opened};
use crate::domain::spec::{Source, SourceRead};
use crate::domain::store::DataStore;

/// Reads one cell as a `SqlValue`, by the value's own storage class.
fn read_cell(row: &SqliteRow, i: usize) -> Result<SqlValue, ConnectorError> {
    let raw: SqliteValueRef<'_> = row
        .try_get_raw(i)
        .map_err(|e| ConnectorError::permanent(e.to_string()).caused_by(e))?;
    if raw.is_null() {
        return Ok(SqlValue::Null);
    }
    let class = raw.type_info().name().to_string();
    let decoded = match class.as_str() {
        "INTEGER" | "BOOLEAN" => <i64 as Decode<sqlx::Sqlite>>::decode(raw).map(SqlValue::Int),
        "REAL" => <f64 as Decode<sqlx::Sqlite>>::decode(raw).map(SqlValue::Float),
        "BLOB" => <Vec<u8> as Decode<sqlx::Sqlite>>::decode(raw).map(SqlValue::Blob),
        _ => <String as Decode<sqlx::Sqlite>>::decode(raw).map(SqlValue::Text),
    };
    decoded.map_err(|e| ConnectorError::permanent(e.to_string()).caused_by_boxed(e))
}

fn class_type(v: &SqlValue) -> Option<DataType> {
    match v {
        SqlValue::Null => None,
        SqlValue::Int(_) => Some(DataType::Int64),
        SqlValue::Float(_) => Some(DataType::Float64),
        SqlValue::Blob(_) => Some(DataType::Binary),
        _ => Some(DataType::Utf8),
    }
}

pub struct SqliteSource {
    path: PathBuf,
}

impl SqliteSource {
    pub fn new(store: &DataStore) -> Result<Self, ConnectorError> {
        Ok(SqliteSource {
            path: store_path(store)?,
        })
    }

    async fn connect(&self) -> Result<SqliteConnection, ConnectorError> {
        if !self.path.is_file() {
            return Err(ConnectorError::permanent(format!(
                "SQLite database {} does not exist",
                self.path.display()
            )));
        }
        SqliteConnectOptions::new()
            .filename(&self.path)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT)
            .connect()
            .await
            .map_err(|e| db_error(&format!("opening {}", self.path.display()), e))
    }
}

async fn table_names(conn: &mut SqliteConnection) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default()
}

#[async_trait]
impl CursorSource for SqliteSource {
    async fn read(
        &self,
        source: &Source,
        filter: Option<&CursorFilter>,
        ctx: &IoContext,
    ) -> Result<Opened, ConnectorError> {
        let mut conn = self.connect().await?;
        let (sql, declared, estimated_rows) = match source.read() {
            SourceRead::Table(table) => {
                let declared = declared_types(&mut conn, table).await?;
                if declared.is_empty() {
                    let known = table_names(&mut conn).await;
                    let hint =
                        crate::domain::names::did_you_mean_hint(table, known.iter().map(String::as_str));
                    return Err(ConnectorError::permanent(format!(
                        "table {table:?} does not exist in {}{hint}",
                        self.path.display()
                    )));
                }
                let count: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT count(*) FROM {}",
                    quote_ident(table)
                )))
                .fetch_one(&mut conn)
                .await
                .ok();
                (
                    format!("SELECT * FROM {}", quote_ident(table)),
                    Some(declared),
                    count.map(|c| c.max(0) as u64),
                )
            }
            SourceRead::Query(q) => (read_query(q)?, None, None),
            SourceRead::Path(_) => {
                return Err(ConnectorError::permanent(
                    "a SQLite store is read by table or query",
                ))
            }
        };
        // A cursor source compares in SQLite: integers as numbers, the rest as the text Sluice
        // writes (ISO 8601 dates and times, exact decimals), bound as a parameter.
        let (sql, after) = match filter.map(|f| (f, &f.after)) {
            None | Some((_, serde_json::Value::Null)) => (sql, None),
            Some((f, after)) => (
                format!(
                    "SELECT * FROM (\n{sql}\n) AS q WHERE q.{} >= ?",
                    quote_ident(&f.column)
                ),
                Some(after.clone()),
            ),
        };
        let batch_size = ctx.batch_size;
        let cancel = ctx.cancel.clone();
        let (schema_tx, schema_rx) = tokio::sync::oneshot::channel::<Result<SchemaRef, ConnectorError>>();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch, ConnectorError>>(2);
        // The reader owns the connection; it stops when the receiver is dropped or on cancel.
        tokio::spawn(async move {
            let mut query = sqlx::query(AssertSqlSafe(sql));
            query = match after {
                None => query,
                Some(serde_json::Value::Number(n)) if n.is_i64() => query.bind(n.as_i64()),
                Some(serde_json::Value::Number(n)) => query.bind(n.as_f64()),
                Some(serde_json::Value::String(text)) => {
                    query.bind(text.replacen('T', " ", 1).trim_end_matches('Z').to_string())
                }
                Some(other) => query.bind(other.to_string()),
            };
            let mut rows = query.fetch(&mut conn);
            let mut chunk: Vec<SqliteRow> = Vec::with_capacity(batch_size);
            let mut schema_tx = Some(schema_tx);
            let mut builder: Option<BatchBuilder> = None;
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    next = rows.try_next() => next,
                };
                let row = match next {
                    Ok(row) => row,
                    Err(e) => {
                        let err = source_query_error(e);
                        match schema_tx.take() {
                            Some(stx) => {
                                let _ = stx.send(Err(err));
                            }
                            None => {
                                let _ = tx.send(Err(err)).await;
                            }
                        }
                        return;
                    }
                };
                let done = row.is_none();
                if let Some(row) = row {
                    chunk.push(row);
                }
                if chunk.len() < batch_size && !done {
                    continue;
                }
                if builder.is_none() {
                    let schema = infer_schema(&chunk, declared.as_deref());
                    if let Some(stx) = schema_tx.take() {
                        let _ = stx.send(Ok(schema.clone()));
                    }
                    let fields = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                    builder = Some(BatchBuilder::new(fields, batch_size));
                }
                let Some(b) = builder.as_mut() else {
                    return;
                };
                if !chunk.is_empty() {
                    let batch = to_batch(&chunk, b);
                    chunk.clear();
                    if tx.send(batch).await.is_err() {
                        return;
                    }
                }
                if done {
                    return;
                }
            }
        });
        let schema = schema_rx.await.map_err(|_| {
            ConnectorError::permanent("the SQLite reader stopped before it produced a schema")
        })??;
        let stream = stream_from(rx).map(|r| r.map_err(|e| DataFusionError::External(Box::new(e))));
        Ok(Opened {
            stream: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
            estimated_rows,
        })
    }
}

/// The statement that reads a source query. The database is open read-only, but a read-only
/// connection still runs `VACUUM INTO '<file>'` (which writes a file), and sqlx runs every
/// statement of a text, the second after a `;` too. So the query must be one statement, and a
/// query: it starts with SELECT, WITH or VALUES (a WITH that ends in a DELETE is refused by
/// the read-only connection). Not wrapped as a subquery, so its columns keep their names even
/// when two are named alike (SQLite renames a subquery's `id, id` to `id, id:1`).
fn read_query(query: &str) -> Result<String, ConnectorError> {
    let statement = one_statement(query).map_err(|why| ConnectorError::permanent_from("query", why))?;
    let b = statement.as_bytes();
    let start = skip_space_and_comments(b, 0);
    let word: String = b[start..]
        .iter()
        .take_while(|c| is_id_char(**c))
        .map(|c| char::from(*c).to_ascii_uppercase())
        .collect();
    if !matches!(word.as_str(), "SELECT" | "WITH" | "VALUES") {
        return Err(ConnectorError::permanent(format!(
            "query: a source query reads: it is a SELECT, WITH or VALUES query, not {}",
            if word.is_empty() { "empty" } else { &word }
        )));
    }
    Ok(statement.to_string())
}

/// SQLite's whitespace (`sqlite3Isspace`).
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// A byte of an identifier or keyword (SQLite's `IdChar`).
fn is_id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The index of the first byte at or after `i` that is not whitespace or inside a comment:
/// `--` to the end of the line, `/* */` to its end or the end of the text.
fn skip_space_and_comments(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        if is_space(b[i]) {
            i += 1;
        } else if b[i] == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                i += 1;
            }
            i = (i + 2).min(b.len());
        } else {
            break;
        }
    }
    i
}

/// Why a source query is not one statement SQLite may run as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum NotOneStatement {
    #[error("it is more than one statement; a source query is exactly one read-only statement")]
    Several,
    /// `token` is the parameter's first characters.
    #[error("it has a parameter ({token}); a source query binds none: write the value in the query")]
    Parameter { token: String },
    #[error("it contains a NUL character")]
    Nul,
}

/// `sql` without a trailing `;` (and what follows it: comments, spaces), or why it is not one
/// statement. Scans `sql` by the rules of SQLite's own tokenizer (`tokenize.c`) for what may
/// hide a `;`: quoted strings and identifiers (a quote doubled inside), `[...]` identifiers,
/// `--` and `/* */` comments. Bind parameters are refused: a source binds none, and SQLite's
/// Tcl-style variables (`$a(...)`) are tokens that may hold anything, a `;` too.
fn one_statement(sql: &str) -> Result<&str, NotOneStatement> {
    let b = sql.as_bytes();
    let mut end: Option<usize> = None;
    let mut i = 0;
    loop {
        i = skip_space_and_comments(b, i);
        let Some(&c) = b.get(i) else { break };
        if c == b';' {
            end.get_or_insert(i);
            i += 1;
            continue;
        }
        if end.is_some() {
            return Err(NotOneStatement::Several);
        }
        match c {
            b'\'' | b'"' | b'`' => {
                i += 1;
                while i < b.len() {
                    if b[i] == c {
                        if b.get(i + 1) != Some(&c) {
                            break;
                        }
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'[' => {
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
                i += 1;
            }
            b'?' | b'$' | b'@' | b':' | b'#' => {
                let token: String = sql[i..]
                    .chars()
                    .take_while(|ch| !ch.is_whitespace())
                    .take(20)
                    .collect();
                return Err(NotOneStatement::Parameter { token });
            }
            0 => return Err(NotOneStatement::Nul),
            c if is_id_char(c) => {
                while i < b.len() && is_id_char(b[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(match end {
        Some(at) => &sql[..at],
        None => sql,
    })
}

/// Column types from declarations when there are any, else from the first chunk's values.
fn infer_schema(chunk: &[SqliteRow], declared: Option<&[(String, String)]>) -> SchemaRef {
    let fields: Vec<Field> = match declared {
        Some(decl) => decl
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| {
                let dt = arrow_type_for_decl(ty).unwrap_or_else(|| value_type(chunk, i));
                Field::new(name, dt, true)
            })
            .collect(),
        None => match chunk.first() {
            Some(first) => first
                .columns()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let decl = c.type_info().name().to_string();
                    let dt = match arrow_type_for_decl(&decl) {
                        // sqlx reports NUMERIC for expression columns it cannot type.
                        Some(_) if decl == "NUMERIC" => value_type(chunk, i),
                        Some(dt) => dt,
                        None => value_type(chunk, i),
                    };
                    Field::new(c.name(), dt, true)
                })
                .collect(),
            None => vec![],
        },
    };
    Arc::new(Schema::new(fields))
}

/// The type of a column's values in `chunk`: the widest storage class seen (integers widen to
/// floats, anything mixed with text is text).
fn value_type(chunk: &[SqliteRow], i: usize) -> DataType {
    let mut seen: Option<DataType> = None;
    for row in chunk {
        let Some(t) = read_cell(row, i).ok().as_ref().and_then(class_type) else {
            continue;
        };
        seen = Some(match (seen, t) {
            (None, t) => t,
            (Some(a), b) if a == b => a,
            (Some(DataType::Int64), DataType::Float64) | (Some(DataType::Float64), DataType::Int64) => {
                DataType::Float64
            }
            _ => DataType::Utf8,
        });
    }
    seen.unwrap_or(DataType::Utf8)
}

/// The rows of `chunk` as one batch.
fn to_batch(chunk: &[SqliteRow], builder: &mut BatchBuilder) -> Result<RecordBatch, ConnectorError> {
    for row in chunk {
        for i in 0..builder.cols.len() {
            let v = read_cell(row, i)?;
            if let Err(why) = builder.cols[i].append_sql_value(v) {
                return Err(builder.value_error(i, why));
            }
        }
        builder.rows += 1;
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_query_is_one_statement() {
        for (sql, statement) in [
            ("SELECT 1", "SELECT 1"),
            ("SELECT 1;", "SELECT 1"),
            ("SELECT 1 ; ; -- done\n /* really */ ", "SELECT 1 "),
            (
                "SELECT ';' AS \"a;b\", `c;d`, [e;f] FROM t",
                "SELECT ';' AS \"a;b\", `c;d`, [e;f] FROM t",
            ),
            ("SELECT 'it''s; fine' -- ; no\n", "SELECT 'it''s; fine' -- ; no\n"),
            (
                "SELECT x'00', a$b FROM t /* ; */",
                "SELECT x'00', a$b FROM t /* ; */",
            ),
        ] {
            assert_eq!(one_statement(sql), Ok(statement), "{sql}");
        }
        for (sql, why) in [
            ("SELECT 1; DROP TABLE t", "more than one statement"),
            ("SELECT 1; COMMIT; DROP TABLE t", "more than one statement"),
            ("SELECT 1;VACUUM INTO '/tmp/x'", "more than one statement"),
            ("SELECT 'a''' ; DROP TABLE t", "more than one statement"),
            ("SELECT 1 -- x\n; DROP TABLE t", "more than one statement"),
            ("SELECT $a(;) FROM t", "parameter"),
            ("SELECT * FROM t WHERE id = ?", "parameter"),
            ("SELECT :x, @y, #z", "parameter"),
            ("SELECT 1\0; DROP TABLE t", "NUL"),
        ] {
            let got = one_statement(sql);
            assert!(
                got.as_ref().is_err_and(|e| e.to_string().contains(why)),
                "{sql}: {got:?}"
            );
        }
    }

    /// Differential: SQLite itself, on a writable database, runs the second statement (an
    /// INSERT that shows) of exactly the texts that `one_statement` refuses.
    #[tokio::test]
    async fn one_statement_agrees_with_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = SqliteConnectOptions::new()
            .filename(dir.path().join("d.db"))
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE log (n INTEGER)")
            .execute(&mut conn)
            .await
            .unwrap();
        let insert = "INSERT INTO log VALUES (1)";
        // (text, whether SQLite runs its INSERT)
        let cases = [
            (format!("SELECT 1 /* x */; {insert}"), true),
            (format!("SELECT '/*'; {insert} --*/"), true),
            (format!("SELECT 1 AS \"--\"; {insert}"), true),
            (format!("SELECT 1 AS [\"]; {insert}"), true),
            (format!("SELECT x'' AS a, 'b''' AS c; {insert}"), true),
            (format!("SELECT 1 AS `a``b`; {insert}"), true),
            (format!("SELECT 1-/**/-1; {insert}"), true),
            (format!("SELECT 1 AS ab$c; {insert}"), true),
            (format!("SELECT 1e-5; {insert}"), true),
            (format!("SELECT 'a'';' AS x;{insert}"), true),
            (format!("SELECT 1 -- c\r; {insert}"), false),
            (format!("SELECT 1 /*/; {insert} */"), false),
            (format!("SELECT 1 /* unterminated ; {insert}"), false),
            (format!("SELECT ';{insert}' AS x"), false),
            ("SELECT 1; -- a comment".to_string(), false),
        ];
        for (sql, runs_two) in cases {
            let count = "SELECT count(*) FROM log";
            let before: i64 = sqlx::query_scalar(count).fetch_one(&mut conn).await.unwrap();
            let _ = sqlx::query(AssertSqlSafe(sql.clone())).execute(&mut conn).await;
            let after: i64 = sqlx::query_scalar(count).fetch_one(&mut conn).await.unwrap();
            assert_eq!(after > before, runs_two, "SQLite on {sql:?}");
            assert_eq!(one_statement(&sql).is_err(), runs_two, "one_statement({sql:?})");
        }
    }
}
