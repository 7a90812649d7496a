//! Writing into SQLite: a staging table filled in one transaction, then swapped in, appended
//! or merged (upserted) in another; writes begin IMMEDIATE so they wait for the write lock.

use std::path::PathBuf;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
// Identifiers in these statements are quoted by `quote_ident`; values are bound. Write
// transactions begin IMMEDIATE: a deferred one that reads first cannot wait for the write lock
// and fails at once with "database is locked" when another flow is writing.
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

use super::{db_error, decl_for_arrow_type, declared_types, quote_ident, quote_ident_part, BUSY_TIMEOUT};
use crate::connectors::arrow_sql::{self, value_at, SqlValue};
use crate::connectors::relational::split_table;
use crate::connectors::{
    error, merge, store_path, ConnectorError, IoContext, Load, RowsCallback, SinkConnector,
};
use crate::domain::spec::WriteMode;
use crate::domain::store::DataStore;

pub struct SqliteSink {
    path: PathBuf,
}

impl SqliteSink {
    pub fn new(store: &DataStore) -> Result<Self, ConnectorError> {
        Ok(SqliteSink {
            path: store_path(store)?,
        })
    }
}

/// Binds one value for SQLite: text for decimals, dates and times (SQLite has no such types).
fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    v: SqlValue,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    match v {
        SqlValue::Null => q.bind(None::<i64>),
        SqlValue::Bool(b) => q.bind(b),
        SqlValue::Int(i) => q.bind(i),
        SqlValue::Float(f) => q.bind(f),
        SqlValue::Blob(b) => q.bind(b),
        other => q.bind(arrow_sql::text_of(&other)),
    }
}

/// The staging table of a load: in the same database, never read by anyone else.
fn stage_table(load: &Load) -> String {
    format!("_sluice_stage_{}", load.key)
}

fn column_defs(schema: &SchemaRef) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", quote_ident(f.name()), decl_for_arrow_type(f.data_type())))
        .collect()
}

impl SqliteSink {
    async fn connect(&self) -> Result<SqliteConnection, ConnectorError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ConnectorError::permanent_from(dir.display(), e))?;
        }
        SqliteConnectOptions::new()
            .filename(&self.path)
            .create_if_missing(true)
            .busy_timeout(BUSY_TIMEOUT)
            .connect()
            .await
            .map_err(|e| db_error(&format!("opening {}", self.path.display()), e))
    }
}

async fn table_exists(conn: &mut SqliteConnection, table: &str) -> Result<bool, ConnectorError> {
    Ok(!declared_types(conn, table).await?.is_empty())
}

/// The column lists of a table's unique indexes (its primary key among them; partial and
/// expression indexes left out: `ON CONFLICT` cannot use them).
async fn unique_indexes(
    conn: &mut SqliteConnection,
    table: &str,
) -> Result<Vec<Vec<String>>, ConnectorError> {
    let (schema, name) = split_table(table);
    let prefix = schema.map(|s| format!("{}.", quote_ident(s))).unwrap_or_default();
    let err = |e| db_error("reading the table's indexes", e);
    let mut indexes = Vec::new();
    let columns = sqlx::query(AssertSqlSafe(format!(
        "PRAGMA {prefix}table_info({})",
        quote_ident(name)
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(err)?;
    let mut pk: Vec<(i64, String)> = columns
        .iter()
        .map(|r| (r.get::<i64, _>("pk"), r.get::<String, _>("name")))
        .filter(|(pk, _)| *pk > 0)
        .collect();
    pk.sort();
    if !pk.is_empty() {
        indexes.push(pk.into_iter().map(|(_, n)| n).collect());
    }
    let list = sqlx::query(AssertSqlSafe(format!(
        "PRAGMA {prefix}index_list({})",
        quote_ident(name)
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(err)?;
    for index in list {
        if index.get::<i64, _>("unique") != 1 || index.get::<i64, _>("partial") != 0 {
            continue;
        }
        let index_name: String = index.get("name");
        let info = sqlx::query(AssertSqlSafe(format!(
            "PRAGMA {prefix}index_info({})",
            quote_ident(&index_name)
        )))
        .fetch_all(&mut *conn)
        .await
        .map_err(err)?;
        let names: Option<Vec<String>> = info.iter().map(|r| r.get::<Option<String>, _>("name")).collect();
        if let Some(names) = names {
            indexes.push(names);
        }
    }
    Ok(indexes)
}

/// Publishes one staged `merge` load inside the publish transaction: a new target is the staged
/// table with a unique index on the key; an existing one gets the rows upserted (`ON
/// CONFLICT` when a unique index covers the key, else update-then-insert).
async fn merge_staged(
    tx: &mut SqliteConnection,
    load: &Load,
    existing: Vec<(String, String)>,
    notes: &mut Vec<String>,
) -> Result<(), ConnectorError> {
    let stage_name = stage_table(load);
    let stage = quote_ident(&stage_name);
    let target = quote_ident(&load.table);
    let (schema, bare) = split_table(&load.table);
    let keys: Vec<String> = load.unique_key.iter().map(|k| quote_ident_part(k)).collect();
    if existing.is_empty() {
        let index = match schema {
            Some(s) => format!(
                "{}.{}",
                quote_ident(s),
                quote_ident_part(&format!("{bare}_unique_key"))
            ),
            None => quote_ident_part(&format!("{bare}_unique_key")),
        };
        let sql = format!(
            "DROP TABLE IF EXISTS {target}; ALTER TABLE {stage} RENAME TO {}; \
             CREATE UNIQUE INDEX {index} ON {} ({})",
            quote_ident_part(bare),
            quote_ident_part(bare),
            keys.join(", ")
        );
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&format!("creating {}", load.table), e))?;
        notes.push(merge::created_note(load, "a unique index"));
        return Ok(());
    }
    let staged: Vec<String> = declared_types(tx, &stage_name)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let have: Vec<String> = existing.into_iter().map(|(n, _)| n).collect();
    merge::check_columns(load, &staged, &have, true)?;
    let key_index = merge::has_key_index(&unique_indexes(tx, &load.table).await?, &load.unique_key, true);
    if !key_index {
        notes.push(merge::no_index_note(load));
    }
    let sql = merge::MergeInto {
        target: &target,
        stage: &stage,
        staged: &staged,
        keys: &load.unique_key,
        case_insensitive: true,
        value: &|name: &str| format!("s.{}", quote_ident_part(name)),
    }
    .sql(key_index);
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(&format!("merging into {}", load.table), e))?;
    Ok(())
}

#[async_trait]
impl SinkConnector for SqliteSink {
    /// Loads the rows into the load's staging table, created fresh, in one transaction.
    async fn stage(
        &self,
        load: &Load,
        mut input: SendableRecordBatchStream,
        _ctx: &IoContext,
        on_rows: RowsCallback,
    ) -> Result<u64, ConnectorError> {
        let mut conn = self.connect().await?;
        let schema = input.schema();
        let stage = quote_ident(&stage_table(load));
        // A failure or cancellation (the future dropped) rolls everything back.
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error("starting a transaction", e))?;
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {stage}")))
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("dropping an earlier staging table", e))?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {stage} ({})",
            column_defs(&schema).join(", ")
        )))
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("creating the staging table", e))?;
        let columns: Vec<String> = schema.fields().iter().map(|f| quote_ident(f.name())).collect();
        let ncols = columns.len().max(1);
        let rows_per_insert = (30_000 / ncols).clamp(1, 500);
        let mut total = 0u64;
        while let Some(batch) = input.next().await {
            let batch = batch.map_err(|e| error::to_connector_error(e, "reading rows to write"))?;
            let arrays = batch.columns();
            let mut start = 0;
            while start < batch.num_rows() {
                let end = (start + rows_per_insert).min(batch.num_rows());
                let row_sql = format!("({})", vec!["?"; ncols].join(", "));
                let sql = format!(
                    "INSERT INTO {stage} ({}) VALUES {}",
                    columns.join(", "),
                    vec![row_sql; end - start].join(", ")
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for r in start..end {
                    for a in arrays {
                        q = bind(q, value_at(a, r));
                    }
                }
                q.execute(&mut *tx)
                    .await
                    .map_err(|e| db_error("inserting rows", e))?;
                start = end;
            }
            total += batch.num_rows() as u64;
            on_rows(total, None);
        }
        tx.commit()
            .await
            .map_err(|e| db_error("committing the staged rows", e))?;
        Ok(total)
    }

    /// Swaps in (`replace`), inserts (`append`) or upserts (`merge`) every staged table in one
    /// transaction.
    async fn publish(&self, loads: &[Load]) -> Result<Vec<String>, ConnectorError> {
        let mut notes = Vec::new();
        let mut conn = self.connect().await?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| db_error("starting a transaction", e))?;
        for load in loads {
            let stage_name = stage_table(load);
            if !table_exists(&mut tx, &stage_name).await? {
                continue; // published already
            }
            let stage = quote_ident(&stage_name);
            let target = quote_ident(&load.table);
            let (_, bare) = split_table(&load.table);
            let existing = declared_types(&mut tx, &load.table).await?;
            if load.mode == WriteMode::Merge {
                merge_staged(&mut tx, load, existing, &mut notes).await?;
            } else if load.mode == WriteMode::Append && !existing.is_empty() {
                let staged = declared_types(&mut tx, &stage_name).await?;
                let have: Vec<&str> = existing.iter().map(|(n, _)| n.as_str()).collect();
                let missing: Vec<&str> = staged
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .filter(|n| !have.contains(n))
                    .collect();
                if !missing.is_empty() {
                    return Err(ConnectorError::permanent(format!(
                        "cannot append to {}: it has no column(s) {}",
                        load.table,
                        missing.join(", ")
                    )));
                }
                let cols: Vec<String> = staged.iter().map(|(n, _)| quote_ident(n)).collect();
                let cols = cols.join(", ");
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {target} ({cols}) SELECT {cols} FROM {stage}"
                )))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(&format!("appending to {}", load.table), e))?;
                sqlx::query(AssertSqlSafe(format!("DROP TABLE {stage}")))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error("dropping the staging table", e))?;
            } else {
                sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {target}")))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_error(&format!("dropping the old {}", load.table), e))?;
                sqlx::query(AssertSqlSafe(format!(
                    "ALTER TABLE {stage} RENAME TO {}",
                    quote_ident(bare)
                )))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error(&format!("swapping in {}", load.table), e))?;
            }
        }
        tx.commit()
            .await
            .map_err(|e| db_error("committing the publish", e))?;
        Ok(notes)
    }

    async fn discard(&self, loads: &[Load]) -> Result<(), ConnectorError> {
        if !self.path.exists() {
            return Ok(());
        }
        let mut conn = self.connect().await?;
        for load in loads {
            sqlx::query(AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS {}",
                quote_ident(&stage_table(load))
            )))
            .execute(&mut conn)
            .await
            .map_err(|e| db_error("dropping a staging table", e))?;
        }
        Ok(())
    }
}
