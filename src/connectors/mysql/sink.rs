//! Loading into MySQL: rows staged with multi-row `INSERT`s into a staging table in one
//! transaction (under a user-level lock a discard waits for); publishing inserts `append` loads
//! (recorded in the marker table, so a resumed publish never appends twice), merges `merge`
//! loads and swaps in `replace` loads with one `RENAME TABLE`.

use async_trait::async_trait;
use datafusion::arrow::array::*;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use sqlx::{AssertSqlSafe, Connection, MySqlConnection};

use super::literals::{mysql_type_for, normalize, write_literal, Lit};
use super::{connect, quote_ident, quote_part, show_columns, table_exists, Conn};
use crate::connectors::error;
use crate::connectors::merge;
use crate::connectors::pools::Pools;
use crate::connectors::relational::{split_table, stage_name, Guarded};
use crate::connectors::{ConnectorError, IoContext, Load, RowsCallback, SinkConnector};
use crate::domain::spec::WriteMode;
use crate::domain::store::DataStore;

/// Where the bookkeeping of published appends lives (in the store's own database).
const MARKER_TABLE: &str = "_sluice_published";
/// One `INSERT` statement carries about this much SQL (well under `max_allowed_packet`).
const STATEMENT_BYTES: usize = 1 << 20;

pub struct MysqlSink {
    conn: Conn,
}

impl MysqlSink {
    pub fn new(store: &DataStore, pools: &Pools) -> Result<Self, ConnectorError> {
        Ok(MysqlSink {
            conn: connect(store, pools)?,
        })
    }
}

/// The staging table of a load, and the name the old table takes while it is swapped out.
fn stage_of(load: &Load) -> String {
    qualified_like(&load.table, &stage_name(load))
}

/// The user-level lock (`GET_LOCK`) a staging writer holds on its session while it stages
/// `load`: a discard takes it first, so it drops the staging table only after every statement
/// of a cancelled writer has ended on the server — a `CREATE TABLE` still running there when
/// the writer's future was dropped would otherwise leave the table behind. (Lock names are at
/// most 64 characters and server-wide; the load key is unique per instance, flow and output.)
fn stage_lock(load: &Load) -> String {
    let mut name = format!("sluice_stage_{}", load.key);
    name.truncate(64);
    name
}

/// Takes `lock` on `conn`'s session, waiting up to `wait_s`; `Ok(false)` when it timed out.
async fn get_lock(conn: &mut MySqlConnection, lock: &str, wait_s: u32) -> Result<bool, sqlx::Error> {
    let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(lock)
        .bind(wait_s)
        .fetch_one(conn)
        .await?;
    Ok(got == Some(1))
}

async fn release_lock(conn: &mut MySqlConnection, lock: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DO RELEASE_LOCK(?)").bind(lock).execute(conn).await?;
    Ok(())
}

fn old_of(load: &Load) -> String {
    qualified_like(&load.table, &format!("_sluice_old_{}", load.key))
}

fn qualified_like(table: &str, name: &str) -> String {
    match split_table(table) {
        (Some(schema), _) => format!("{schema}.{name}"),
        (None, _) => name.to_string(),
    }
}

async fn database_exists(conn: &mut MySqlConnection, db: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?")
        .bind(db)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n > 0)
}

/// Creates the database `db` when it is missing. `CREATE DATABASE IF NOT EXISTS` is not safe
/// against itself: two at once (several outputs of a flow, or several flows, into one new
/// database) may both find it missing, and the second then fails to create it. A creation
/// that fails while the database now exists was such a race, and the database is there: that
/// is success.
async fn ensure_database(conn: &mut MySqlConnection, db: &str) -> Result<(), sqlx::Error> {
    if database_exists(conn, db).await? {
        return Ok(());
    }
    match exec(conn, format!("CREATE DATABASE IF NOT EXISTS {}", quote_part(db))).await {
        Ok(()) => Ok(()),
        Err(e) => match database_exists(conn, db).await {
            Ok(true) => Ok(()),
            _ => Err(e),
        },
    }
}

async fn exec(conn: &mut MySqlConnection, sql: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// The type of a key column in a merge's staging table: MySQL cannot index a whole `LONGTEXT`
/// or `LONGBLOB`, so a text key holds up to 255 characters (a binary one 255 bytes).
fn key_type(ty: String) -> String {
    match ty.as_str() {
        "LONGTEXT" => "VARCHAR(255)".into(),
        "LONGBLOB" => "VARBINARY(255)".into(),
        _ => ty,
    }
}

/// The column lists of a table's unique indexes (its primary key among them; prefix and
/// expression indexes left out: they do not make whole values unique).
async fn unique_indexes(conn: &mut MySqlConnection, table: &str) -> Result<Vec<Vec<String>>, sqlx::Error> {
    let (schema, name) = split_table(table);
    let rows: Vec<(String, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT CAST(INDEX_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR), CAST(SUB_PART AS SIGNED) \
         FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) \
         AND TABLE_NAME = ? AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX",
    )
    .bind(schema)
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    let mut indexes: Vec<(String, Option<Vec<String>>)> = Vec::new();
    for (index, column, sub_part) in rows {
        if indexes.last().map(|(i, _)| i != &index).unwrap_or(true) {
            indexes.push((index.clone(), Some(Vec::new())));
        }
        if let Some((_, columns)) = indexes.last_mut() {
            match (column, sub_part, columns.as_mut()) {
                (Some(c), None, Some(list)) => list.push(c),
                _ => *columns = None,
            }
        }
    }
    Ok(indexes.into_iter().filter_map(|(_, c)| c).collect())
}

/// The statement that merges a staged table into an existing target, and a note for the log.
/// `ON DUPLICATE KEY UPDATE` only when the key's index is the table's one unique index: with
/// others, a row could collide on one of those and update the wrong row.
fn merge_sql(
    load: &Load,
    staged: &[String],
    target: &str,
    stage: &str,
    indexes: &[Vec<String>],
) -> (String, Option<String>) {
    let cols = staged
        .iter()
        .map(|c| quote_part(c))
        .collect::<Vec<_>>()
        .join(", ");
    let updates = merge::non_key(staged, &load.unique_key, true);
    let keyed = merge::has_key_index(indexes, &load.unique_key, true);
    if keyed && indexes.len() == 1 {
        let set: Vec<String> = if updates.is_empty() {
            load.unique_key
                .iter()
                .take(1)
                .map(|k| format!("{0} = VALUES({0})", quote_part(k)))
                .collect()
        } else {
            updates
                .iter()
                .map(|c| format!("{0} = VALUES({0})", quote_part(c)))
                .collect()
        };
        let sql = format!(
            "INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage} AS s ON DUPLICATE KEY UPDATE {}",
            set.join(", ")
        );
        return (sql, None);
    }
    let matches: Vec<String> = load
        .unique_key
        .iter()
        .map(|k| format!("t.{0} = s.{0}", quote_part(k)))
        .collect();
    let matches = matches.join(" AND ");
    let mut sql = String::new();
    if !updates.is_empty() {
        let set: Vec<String> = updates
            .iter()
            .map(|c| format!("t.{0} = s.{0}", quote_part(c)))
            .collect();
        sql.push_str(&format!(
            "UPDATE {target} AS t JOIN {stage} AS s ON {matches} SET {}; ",
            set.join(", ")
        ));
    }
    let select: Vec<String> = staged.iter().map(|c| format!("s.{}", quote_part(c))).collect();
    sql.push_str(&format!(
        "INSERT INTO {target} ({cols}) SELECT {} FROM {stage} AS s \
         WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE {matches})",
        select.join(", ")
    ));
    let note = if keyed {
        format!(
            "merge into {}: besides its key ({}) it has other unique indexes, so matching rows \
             were updated and the others inserted, in one transaction",
            load.table,
            load.unique_key.join(", ")
        )
    } else {
        merge::no_index_note(load)
    };
    (sql, Some(note))
}

#[async_trait]
impl SinkConnector for MysqlSink {
    async fn stage(
        &self,
        load: &Load,
        mut input: SendableRecordBatchStream,
        _ctx: &IoContext,
        on_rows: RowsCallback,
    ) -> Result<u64, ConnectorError> {
        let schema = input.schema();
        let is_key = |name: &str| {
            load.mode == WriteMode::Merge && load.unique_key.iter().any(|k| k.eq_ignore_ascii_case(name))
        };
        let (mut defs, lits): (Vec<String>, Vec<Lit>) = schema
            .fields()
            .iter()
            .map(|f| {
                let (ty, lit) = mysql_type_for(f.data_type());
                let ty = if is_key(f.name()) { key_type(ty) } else { ty };
                (format!("{} {ty}", quote_part(f.name())), lit)
            })
            .unzip();
        if load.mode == WriteMode::Merge && !load.unique_key.is_empty() {
            // A merge's table gets its primary key here: renamed into place when the target
            // does not exist yet, it is the target's.
            let keys: Vec<String> = load.unique_key.iter().map(|k| quote_part(k)).collect();
            defs.push(format!("PRIMARY KEY ({})", keys.join(", ")));
        }
        let columns: Vec<String> = schema.fields().iter().map(|f| quote_part(f.name())).collect();
        let stage = quote_ident(&stage_of(load));
        let mut guarded = Guarded::new(self.conn.acquire().await?);
        let conn = &mut *guarded.conn;
        let mode: String = sqlx::query_scalar("SELECT @@SESSION.sql_mode")
            .fetch_one(&mut *conn)
            .await
            .map_err(self.conn.err("reading the session's SQL mode"))?;
        let backslash_escapes = !mode.to_ascii_uppercase().contains("NO_BACKSLASH_ESCAPES");
        // Held until the rows are committed (or the session ends): see `stage_lock`.
        let lock = stage_lock(load);
        if !get_lock(conn, &lock, 30)
            .await
            .map_err(self.conn.err("locking the staging table"))?
        {
            return Err(ConnectorError::transient(format!(
                "the staging table of {} is still held by an earlier writer after 30 s",
                load.table
            )));
        }
        if let (Some(db), _) = split_table(&load.table) {
            ensure_database(conn, db)
                .await
                .map_err(self.conn.err("creating the target's database"))?;
        }
        exec(
            conn,
            format!(
                "DROP TABLE IF EXISTS {stage}; CREATE TABLE {stage} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                defs.join(", ")
            ),
        )
        .await
        .map_err(self.conn.err("creating the staging table"))?;
        let mut tx = conn
            .begin()
            .await
            .map_err(self.conn.err("starting a transaction"))?;
        let head = format!("INSERT INTO {stage} ({}) VALUES ", columns.join(", "));
        let mut sql = String::with_capacity(STATEMENT_BYTES + 4096);
        let mut total = 0u64;
        while let Some(batch) = input.next().await {
            let batch = batch.map_err(|e| error::to_connector_error(e, "reading rows to write"))?;
            let arrays: Vec<ArrayRef> = batch
                .columns()
                .iter()
                .zip(&lits)
                .enumerate()
                .map(|(i, (a, l))| {
                    normalize(a, *l).map_err(|e| {
                        ConnectorError::permanent_from(format_args!("column {:?}", schema.field(i).name()), e)
                    })
                })
                .collect::<Result<_, _>>()?;
            for row in 0..batch.num_rows() {
                sql.push_str(if sql.is_empty() { &head } else { "," });
                sql.push('(');
                for (i, (a, l)) in arrays.iter().zip(&lits).enumerate() {
                    if i > 0 {
                        sql.push(',');
                    }
                    if a.is_null(row) {
                        sql.push_str("NULL");
                    } else {
                        write_literal(&mut sql, a, row, *l, backslash_escapes).map_err(|e| {
                            ConnectorError::permanent_from(
                                format_args!("column {:?}", schema.field(i).name()),
                                e,
                            )
                        })?;
                    }
                }
                sql.push(')');
                if sql.len() >= STATEMENT_BYTES {
                    exec(&mut tx, std::mem::take(&mut sql))
                        .await
                        .map_err(self.conn.err("loading rows"))?;
                    sql.reserve(STATEMENT_BYTES + 4096);
                }
            }
            total += batch.num_rows() as u64;
            on_rows(total, None);
        }
        if !sql.is_empty() {
            exec(&mut tx, sql).await.map_err(self.conn.err("loading rows"))?;
        }
        tx.commit()
            .await
            .map_err(self.conn.err("committing the staged rows"))?;
        release_lock(conn, &lock)
            .await
            .map_err(self.conn.err("unlocking the staging table"))?;
        guarded.done = true;
        Ok(total)
    }

    async fn publish(&self, loads: &[Load]) -> Result<Vec<String>, ConnectorError> {
        let mut notes = Vec::new();
        let mut guarded = Guarded::new(self.conn.acquire().await?);
        let conn = &mut *guarded.conn;
        let marker = quote_part(MARKER_TABLE);
        exec(
            conn,
            format!(
                "CREATE TABLE IF NOT EXISTS {marker} (load_key VARCHAR(100) PRIMARY KEY, \
                 published_utc DATETIME(6) NOT NULL) ENGINE=InnoDB"
            ),
        )
        .await
        .map_err(self.conn.err("creating the publish log"))?;
        let mut renames: Vec<String> = Vec::new();
        let mut olds: Vec<String> = Vec::new();
        for load in loads {
            let stage_q = stage_of(load);
            // A table swapped out by an earlier, interrupted publish.
            exec(
                conn,
                format!("DROP TABLE IF EXISTS {}", quote_ident(&old_of(load))),
            )
            .await
            .map_err(self.conn.err("dropping an old table"))?;
            if !table_exists(conn, &stage_q)
                .await
                .map_err(self.conn.err("finding the staged rows"))?
            {
                continue; // published already
            }
            let stage = quote_ident(&stage_q);
            let target = quote_ident(&load.table);
            let exists = table_exists(conn, &load.table)
                .await
                .map_err(self.conn.err(&format!("reading {}", load.table)))?;
            let into_existing = matches!(load.mode, WriteMode::Append | WriteMode::Merge) && exists;
            if into_existing {
                let have: Vec<String> = show_columns(conn, &load.table)
                    .await
                    .map_err(self.conn.err(&format!("reading {}", load.table)))?
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect();
                let staged: Vec<String> = show_columns(conn, &stage_q)
                    .await
                    .map_err(self.conn.err("reading the staged rows"))?
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect();
                merge::check_columns(load, &staged, &have, true)?;
                let cols = staged
                    .iter()
                    .map(|c| quote_part(c))
                    .collect::<Vec<_>>()
                    .join(", ");
                let write = if load.mode == WriteMode::Merge {
                    let indexes = unique_indexes(conn, &load.table)
                        .await
                        .map_err(self.conn.err(&format!("reading the indexes of {}", load.table)))?;
                    let (sql, note) = merge_sql(load, &staged, &target, &stage, &indexes);
                    notes.extend(note);
                    sql
                } else {
                    format!("INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage}")
                };
                let mut tx = conn
                    .begin()
                    .await
                    .map_err(self.conn.err("starting a transaction"))?;
                let done: Option<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT 1 FROM {marker} WHERE load_key = ? FOR UPDATE"
                )))
                .bind(&load.key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(self.conn.err("reading the publish log"))?;
                if done.is_none() {
                    exec(&mut tx, write)
                        .await
                        .map_err(self.conn.err(&format!("writing into {}", load.table)))?;
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {marker} (load_key, published_utc) VALUES (?, UTC_TIMESTAMP(6))"
                    )))
                    .bind(&load.key)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.conn.err("writing the publish log"))?;
                }
                tx.commit()
                    .await
                    .map_err(self.conn.err("committing the append"))?;
                exec(conn, format!("DROP TABLE {stage}"))
                    .await
                    .map_err(self.conn.err("dropping the staging table"))?;
                sqlx::query(AssertSqlSafe(format!("DELETE FROM {marker} WHERE load_key = ?")))
                    .bind(&load.key)
                    .execute(&mut *conn)
                    .await
                    .map_err(self.conn.err("writing the publish log"))?;
            } else if exists {
                let old = quote_ident(&old_of(load));
                renames.push(format!("{target} TO {old}"));
                renames.push(format!("{stage} TO {target}"));
                olds.push(old);
            } else {
                if load.mode == WriteMode::Merge {
                    notes.push(merge::created_note(load, "a primary key"));
                }
                renames.push(format!("{stage} TO {target}"));
            }
        }
        if !renames.is_empty() {
            // One statement: readers see every old table or every new one.
            exec(conn, format!("RENAME TABLE {}", renames.join(", ")))
                .await
                .map_err(self.conn.err("swapping in the new tables"))?;
        }
        for old in olds {
            exec(conn, format!("DROP TABLE IF EXISTS {old}"))
                .await
                .map_err(self.conn.err("dropping an old table"))?;
        }
        guarded.done = true;
        Ok(notes)
    }

    async fn discard(&self, loads: &[Load]) -> Result<(), ConnectorError> {
        if loads.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.acquire().await?;
        for load in loads {
            // After the writer's last statement (it holds the lock while staging); past the
            // wait the table is dropped anyway.
            let lock = stage_lock(load);
            let locked = get_lock(&mut conn, &lock, 30)
                .await
                .map_err(self.conn.err("locking the staging table"))?;
            if !locked {
                tracing::warn!(table = %load.table, "a staging writer still holds its lock after 30 s; dropping its table anyway");
            }
            exec(
                &mut conn,
                format!(
                    "DROP TABLE IF EXISTS {}, {}",
                    quote_ident(&stage_of(load)),
                    quote_ident(&old_of(load))
                ),
            )
            .await
            .map_err(self.conn.err("dropping staging tables"))?;
            if locked {
                release_lock(&mut conn, &lock)
                    .await
                    .map_err(self.conn.err("unlocking the staging table"))?;
            }
        }
        Ok(())
    }
}
