//! Loading into PostgreSQL: rows staged with binary `COPY ... FROM STDIN (FREEZE)` into a
//! staging table created in the same transaction; publishing swaps (`replace`), inserts
//! (`append`) or upserts (`merge`) every staged table of the flow in one transaction.

use async_trait::async_trait;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use sqlx::{AssertSqlSafe, Connection, Row};

use super::copy_codec::{encode_batch, header, pg_type_for, Wire, TRAILER};
use super::source::relation_oid;
use super::{connect, quote_ident, quote_ident_part, Conn};
use crate::connectors::error;
use crate::connectors::merge;
use crate::connectors::pools::Pools;
use crate::connectors::relational::{split_table, stage_qualified, Guarded};
use crate::connectors::{ConnectorError, IoContext, Load, RowsCallback, SinkConnector};
use crate::domain::spec::WriteMode;
use crate::domain::store::DataStore;

pub struct PostgresSink {
    conn: Conn,
}

impl PostgresSink {
    pub fn new(store: &DataStore, pools: &Pools) -> Result<Self, ConnectorError> {
        Ok(PostgresSink {
            conn: connect(store, pools)?,
        })
    }
}

async fn schema_exists(conn: &mut sqlx::PgConnection, schema: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(&mut *conn)
        .await
}

/// Creates the schema of `table` when it has one and it is missing, in a statement of its own
/// before the load's transaction: loads into one new schema (several outputs of a flow, or
/// several flows) then do not wait for each other's rows. `CREATE SCHEMA IF NOT EXISTS` is
/// not safe against itself: when two run at once, the second fails on pg_namespace's unique
/// index once the first commits. A creation that fails while the schema now exists was such
/// a race, and the schema is there: that is success.
async fn ensure_schema(conn: &mut sqlx::PgConnection, table: &str) -> Result<(), sqlx::Error> {
    let (Some(schema), _) = split_table(table) else {
        return Ok(());
    };
    if schema_exists(conn, schema).await? {
        return Ok(());
    }
    let created = sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        quote_ident_part(schema)
    )))
    .execute(&mut *conn)
    .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) => match schema_exists(conn, schema).await {
            Ok(true) => Ok(()),
            _ => Err(e),
        },
    }
}

/// Columns and their declared types (`format_type`) of an existing table.
async fn declared_columns(
    conn: &mut sqlx::PgConnection,
    table: &str,
) -> Result<Option<Vec<(String, String)>>, sqlx::Error> {
    let Some(oid) = relation_oid(conn, table).await? else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT attname::text AS name, format_type(atttypid, atttypmod) AS ty FROM pg_attribute \
         WHERE attrelid = $1::bigint::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .bind(oid)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(rows.iter().map(|r| (r.get("name"), r.get("ty"))).collect()))
}

/// The column lists of a table's unique indexes (its primary key among them; partial and
/// expression indexes left out: `ON CONFLICT (columns)` does not use them).
async fn unique_indexes(conn: &mut sqlx::PgConnection, table: &str) -> Result<Vec<Vec<String>>, sqlx::Error> {
    let Some(oid) = relation_oid(conn, table).await? else {
        return Ok(Vec::new());
    };
    sqlx::query_scalar(
        "SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
         WHERE i.indrelid = $1::bigint::oid AND i.indisunique AND i.indpred IS NULL \
         AND i.indexprs IS NULL GROUP BY i.indexrelid",
    )
    .bind(oid)
    .fetch_all(&mut *conn)
    .await
}

/// Publishes one staged `merge` load inside the publish transaction. A new target is the
/// staged table, renamed, with a primary key on the key; into an existing one the rows are
/// upserted (`INSERT ... ON CONFLICT` when a unique index covers the key, else an `UPDATE ...
/// FROM` then an `INSERT ... WHERE NOT EXISTS`), each value cast to the target column's type
/// as an append does. Returns a note for the log when there is something to say.
async fn merge_staged(
    tx: &mut sqlx::PgConnection,
    load: &Load,
    staged: &[(String, String)],
    existing: Option<Vec<(String, String)>>,
) -> Result<Option<String>, sqlx::Error> {
    let stage = quote_ident(&stage_qualified(load));
    let target = quote_ident(&load.table);
    let (_, bare) = split_table(&load.table);
    let keys: Vec<String> = load.unique_key.iter().map(|k| quote_ident_part(k)).collect();
    let Some(existing) = existing else {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "ALTER TABLE {stage} RENAME TO {}; ALTER TABLE {target} ADD PRIMARY KEY ({})",
            quote_ident_part(bare),
            keys.join(", ")
        )))
        .execute(&mut *tx)
        .await?;
        return Ok(Some(merge::created_note(load, "a primary key")));
    };
    let staged_names: Vec<String> = staged.iter().map(|(n, _)| n.clone()).collect();
    // Each value cast to the target column's type, as an append does.
    let cast = |name: &str| {
        let ty = existing
            .iter()
            .find(|(n, _)| n == name)
            .map_or("text", |(_, ty)| ty.as_str());
        format!("s.{}::{ty}", quote_ident_part(name))
    };
    let key_index = merge::has_key_index(&unique_indexes(tx, &load.table).await?, &load.unique_key, false);
    let sql = merge::MergeInto {
        target: &target,
        stage: &stage,
        staged: &staged_names,
        keys: &load.unique_key,
        case_insensitive: false,
        value: &cast,
    }
    .sql(key_index);
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *tx).await?;
    Ok((!key_index).then(|| merge::no_index_note(load)))
}

#[async_trait]
impl SinkConnector for PostgresSink {
    async fn stage(
        &self,
        load: &Load,
        mut input: SendableRecordBatchStream,
        _ctx: &IoContext,
        on_rows: RowsCallback,
    ) -> Result<u64, ConnectorError> {
        let schema = input.schema();
        let (defs, wires): (Vec<String>, Vec<Wire>) = schema
            .fields()
            .iter()
            .map(|f| {
                let (ty, wire) = pg_type_for(f.data_type());
                (format!("{} {ty}", quote_ident_part(f.name())), wire)
            })
            .unzip();
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| quote_ident_part(f.name()))
            .collect();
        let stage = quote_ident(&stage_qualified(load));
        let mut guarded = Guarded::new(self.conn.acquire().await?);
        ensure_schema(&mut guarded.conn, &load.table)
            .await
            .map_err(self.conn.err("creating the target's schema"))?;
        let mut tx = guarded
            .conn
            .begin()
            .await
            .map_err(self.conn.err("starting a transaction"))?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {stage}; CREATE TABLE {stage} ({})",
            defs.join(", ")
        )))
        .execute(&mut *tx)
        .await
        .map_err(self.conn.err("creating the staging table"))?;
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY {stage} ({}) FROM STDIN (FORMAT binary, FREEZE)",
                columns.join(", ")
            ))
            .await
            .map_err(self.conn.err("starting the load"))?;
        let mut buf: Vec<u8> = Vec::with_capacity(2 << 20);
        buf.extend_from_slice(&header());
        let mut total = 0u64;
        while let Some(batch) = input.next().await {
            let batch = batch.map_err(|e| error::to_connector_error(e, "reading rows to write"))?;
            encode_batch(&batch, &wires, &mut buf)?;
            if buf.len() >= 1 << 20 {
                // The buffer is reused: one allocation for the whole load.
                copy.send(buf.as_slice())
                    .await
                    .map_err(self.conn.err("loading rows"))?;
                buf.clear();
            }
            total += batch.num_rows() as u64;
            on_rows(total, None);
        }
        buf.extend_from_slice(&TRAILER);
        copy.send(buf).await.map_err(self.conn.err("loading rows"))?;
        copy.finish().await.map_err(self.conn.err("loading rows"))?;
        tx.commit()
            .await
            .map_err(self.conn.err("committing the staged rows"))?;
        guarded.done = true;
        Ok(total)
    }

    async fn publish(&self, loads: &[Load]) -> Result<Vec<String>, ConnectorError> {
        let mut notes = Vec::new();
        let mut guarded = Guarded::new(self.conn.acquire().await?);
        let mut tx = guarded
            .conn
            .begin()
            .await
            .map_err(self.conn.err("starting a transaction"))?;
        for load in loads {
            let stage_q = stage_qualified(load);
            let Some(staged) = declared_columns(&mut tx, &stage_q)
                .await
                .map_err(self.conn.err("finding the staged rows"))?
            else {
                continue; // published already
            };
            let stage = quote_ident(&stage_q);
            let target = quote_ident(&load.table);
            let (_, bare) = split_table(&load.table);
            let existing = declared_columns(&mut tx, &load.table)
                .await
                .map_err(self.conn.err(&format!("reading {}", load.table)))?;
            match existing {
                _ if load.mode == WriteMode::Merge => {
                    if let Some(existing) = &existing {
                        let names =
                            |c: &[(String, String)]| c.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
                        merge::check_columns(load, &names(&staged), &names(existing), false)?;
                    }
                    let note = merge_staged(&mut tx, load, &staged, existing)
                        .await
                        .map_err(self.conn.err(&format!("merging into {}", load.table)))?;
                    notes.extend(note);
                }
                Some(existing) if load.mode == WriteMode::Append => {
                    let mut select = Vec::new();
                    let mut names = Vec::new();
                    let mut missing = Vec::new();
                    for (name, _) in &staged {
                        match existing.iter().find(|(n, _)| n == name) {
                            Some((_, ty)) => {
                                names.push(quote_ident_part(name));
                                select.push(format!("{}::{ty}", quote_ident_part(name)));
                            }
                            None => missing.push(name.as_str()),
                        }
                    }
                    if !missing.is_empty() {
                        return Err(ConnectorError::permanent(format!(
                            "cannot append to {}: it has no column(s) {}",
                            load.table,
                            missing.join(", ")
                        )));
                    }
                    sqlx::raw_sql(AssertSqlSafe(format!(
                        "INSERT INTO {target} ({}) SELECT {} FROM {stage}; DROP TABLE {stage}",
                        names.join(", "),
                        select.join(", ")
                    )))
                    .execute(&mut *tx)
                    .await
                    .map_err(self.conn.err(&format!("appending to {}", load.table)))?;
                }
                existing => {
                    let drop = if existing.is_some() {
                        format!("DROP TABLE {target}; ")
                    } else {
                        String::new()
                    };
                    sqlx::raw_sql(AssertSqlSafe(format!(
                        "{drop}ALTER TABLE {stage} RENAME TO {}",
                        quote_ident_part(bare)
                    )))
                    .execute(&mut *tx)
                    .await
                    .map_err(self.conn.err(&format!("swapping in {}", load.table)))?;
                }
            }
        }
        tx.commit()
            .await
            .map_err(self.conn.err("committing the publish"))?;
        guarded.done = true;
        Ok(notes)
    }

    async fn discard(&self, loads: &[Load]) -> Result<(), ConnectorError> {
        if loads.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.acquire().await?;
        let drops: Vec<String> = loads
            .iter()
            .map(|l| format!("DROP TABLE IF EXISTS {}", quote_ident(&stage_qualified(l))))
            .collect();
        sqlx::raw_sql(AssertSqlSafe(drops.join("; ")))
            .execute(&mut *conn)
            .await
            .map_err(self.conn.err("dropping staging tables"))?;
        Ok(())
    }
}
