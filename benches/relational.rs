//! Database benchmark: `cargo bench --bench relational` (needs PostgreSQL and MySQL/MariaDB).
//!
//! Prints, in one run:
//! 1. PostgreSQL → PostgreSQL copy of an N-row table through a flow, beside the raw pipe
//!    `psql -c "COPY t TO STDOUT (FORMAT binary)" | psql -c "COPY t2 FROM STDIN (FORMAT binary)"`
//!    on the same data (rows/s for both, and the ratio);
//! 2. PostgreSQL → Parquet rows/s;
//! 3. PostgreSQL → MySQL and MySQL → PostgreSQL rows/s (M rows);
//! 4. peak RSS of a fresh server process ingesting 200k and 2M PostgreSQL rows into Parquet;
//! 5. incremental: a PostgreSQL table (`SLUICE_BENCH_INC_ROWS`, default 5000000) with 1% of its
//!    rows (then 0.1%) changed between runs, read through a cursor source into a merge output, beside the
//!    full `replace` of the same table (time and rows read of both, and the ratio).
//!
//! `SLUICE_BENCH_SECTIONS` picks sections (comma-separated: `copy`, `parquet`, `mysql`, `rss`,
//! `incremental`; default all). `SLUICE_BENCH_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/sluice_bench`, created
//! if missing), `SLUICE_BENCH_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/sluice_bench`),
//! `SLUICE_BENCH_ROWS` (default 5000000), `SLUICE_BENCH_MYSQL_ROWS` (default 1000000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{AssertSqlSafe, Connection};

mod common;
use common::{start_server, Server};

struct Db {
    scheme: String,
    user: String,
    host: String,
    port: u16,
    db: String,
}

impl Db {
    fn parse(url: &str) -> Db {
        let (scheme, rest) = url.split_once("://").expect("scheme://");
        let (auth, rest) = rest.split_once('@').expect("user@host");
        let (hostport, db) = rest.split_once('/').expect("/db");
        let (host, port) = hostport.split_once(':').unwrap_or((hostport, ""));
        let default_port = if scheme.starts_with("postgres") {
            5432
        } else {
            3306
        };
        Db {
            scheme: scheme.to_string(),
            user: auth.split(':').next().unwrap_or("root").to_string(),
            host: host.to_string(),
            port: port.parse().unwrap_or(default_port),
            db: db.to_string(),
        }
    }

    fn url(&self, db: &str) -> String {
        format!("{}://{}@{}:{}/{db}", self.scheme, self.user, self.host, self.port)
    }

    fn store(&self, name: &str, engine: &str) -> Value {
        json!({"name": name, "kind": "relational_db", "engine": engine, "connection": {
            "type": "db", "host": self.host, "port": self.port, "user": self.user, "db_name": self.db}})
    }
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

fn rate(rows: u64, d: Duration) -> f64 {
    rows as f64 / d.as_secs_f64()
}

async fn pg_setup(pg: &Db, rows: u64) -> sqlx::PgConnection {
    let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .expect("postgres");
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&pg.db)
        .fetch_one(&mut admin)
        .await
        .expect("pg_database");
    if !exists {
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{}\"", pg.db)))
            .execute(&mut admin)
            .await
            .expect("create database");
    }
    let mut conn = sqlx::PgConnection::connect(&pg.url(&pg.db))
        .await
        .expect("bench database");
    ensure_pg_table(&mut conn, "src", rows).await;
    conn
}

/// `bench.<name>` with `rows` rows of a typical mix (ids, ints, decimals, text, timestamps).
async fn ensure_pg_table(conn: &mut sqlx::PgConnection, name: &str, rows: u64) {
    sqlx::raw_sql("CREATE SCHEMA IF NOT EXISTS bench")
        .execute(&mut *conn)
        .await
        .expect("schema");
    let have: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT CASE WHEN to_regclass('bench.{name}') IS NULL THEN NULL ELSE (SELECT count(*) FROM bench.{name}) END"
    )))
    .fetch_one(&mut *conn)
    .await
    .ok()
    .flatten();
    if have == Some(rows as i64) {
        return;
    }
    eprintln!("generating bench.{name} ({rows} rows)…");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS bench.{name}; \
         CREATE TABLE bench.{name} AS SELECT g::bigint AS id, (g % 1000)::int AS customer, \
           (g * 1.25)::numeric(14,2) AS amount, md5(g::text) AS label, \
           timestamptz '2026-01-01' + g * interval '1 second' AS created, (g % 3 = 0) AS flag \
         FROM generate_series(1, {rows}) g; ANALYZE bench.{name}"
    )))
    .execute(&mut *conn)
    .await
    .expect("generate");
}

/// The raw pipe: binary COPY out of one psql into another.
fn raw_copy_pipe(pg: &Db) -> Duration {
    let psql = |sql: &str| {
        format!(
            "psql -X -q -h {} -p {} -U {} -d {} -c \"{sql}\"",
            pg.host, pg.port, pg.user, pg.db
        )
    };
    let prep = Command::new("sh")
        .arg("-c")
        .arg(psql(
            "DROP TABLE IF EXISTS bench.t2; CREATE TABLE bench.t2 (LIKE bench.src)",
        ))
        .status()
        .expect("psql");
    assert!(prep.success(), "psql prepare failed");
    let pipe = format!(
        "{} | {}",
        psql("COPY bench.src TO STDOUT (FORMAT binary)"),
        psql("COPY bench.t2 FROM STDIN (FORMAT binary)")
    );
    let t0 = Instant::now();
    let ok = Command::new("sh").arg("-c").arg(&pipe).status().expect("pipe");
    let took = t0.elapsed();
    assert!(ok.success(), "COPY pipe failed");
    took
}

async fn flow(server: &Server, name: &str, src: i64, table: &str, target: i64, out: &str) -> Duration {
    let input = server
        .post(
            "/flow-inputs",
            json!({"name": name, "source_store_ids": [src], "target_store_id": target,
                "sources": [{"name": "s", "store_id": src, "table": table}],
                "outputs": [{"node": "s", "table": out, "mode": "replace"}],
                "options": {"task_timeout_s": 3600, "flow_timeout_s": 7200}}),
        )
        .await["id"]
        .as_i64()
        .expect("input id");
    server.run_flow(input).await.0
}

/// Like `flow`, through an identity transform (`SELECT * FROM s`) between source and output.
async fn flow_through(
    server: &Server,
    name: &str,
    src: i64,
    table: &str,
    target: i64,
    out: &str,
) -> Duration {
    let input = server
        .post(
            "/flow-inputs",
            json!({"name": name, "source_store_ids": [src], "target_store_id": target,
                "sources": [{"name": "s", "store_id": src, "table": table}],
                "transforms": [{"name": "t", "sql": "SELECT * FROM s"}],
                "outputs": [{"node": "t", "table": out, "mode": "replace"}],
                "options": {"task_timeout_s": 3600, "flow_timeout_s": 7200}}),
        )
        .await["id"]
        .as_i64()
        .expect("input id");
    server.run_flow(input).await.0
}

/// `bench.inc`: `rows` rows with a primary key and an indexed `updated_at` cursor column.
async fn ensure_inc_table(conn: &mut sqlx::PgConnection, rows: u64) {
    let have: Option<i64> = sqlx::query_scalar(
        "SELECT CASE WHEN to_regclass('bench.inc') IS NULL THEN NULL ELSE (SELECT count(*) FROM bench.inc) END",
    )
    .fetch_one(&mut *conn)
    .await
    .ok()
    .flatten();
    if have == Some(rows as i64) {
        return;
    }
    eprintln!("generating bench.inc ({rows} rows)…");
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS bench.inc; \
         CREATE TABLE bench.inc AS SELECT g::bigint AS id, (g % 1000)::int AS customer, \
           (g * 1.25)::numeric(14,2) AS amount, md5(g::text) AS label, \
           timestamptz '2026-01-01' + g * interval '1 second' AS updated_at \
         FROM generate_series(1, {rows}) g; \
         ALTER TABLE bench.inc ADD PRIMARY KEY (id); \
         CREATE INDEX inc_updated_at ON bench.inc (updated_at); ANALYZE bench.inc"
    )))
    .execute(&mut *conn)
    .await
    .expect("generate bench.inc");
}

/// Changes one row in `every` of `bench.inc` (the ids ≡ `round` mod `every`): a new amount and
/// `updated_at`. Returns the rows changed.
async fn change_rows(conn: &mut sqlx::PgConnection, every: u64, round: u64) -> u64 {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "UPDATE bench.inc SET amount = amount + 1, updated_at = clock_timestamp() WHERE id % {every} = {round}"
    )))
    .execute(&mut *conn)
    .await
    .expect("update")
    .rows_affected()
}

/// `(count, sum(amount))` of a table, to check a merge target equals its source.
async fn fingerprint(conn: &mut sqlx::PgConnection, table: &str) -> (i64, String) {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT count(*), coalesce(sum(amount), 0)::text FROM {table}"
    )))
    .fetch_one(&mut *conn)
    .await
    .expect("fingerprint")
}

/// Section 5: incremental (cursor source → merge output) beside a full replace, 1% changed.
async fn incremental_section(server: &Server, conn: &mut sqlx::PgConnection, pg_id: i64, rows: u64) {
    ensure_inc_table(conn, rows).await;
    sqlx::raw_sql("DROP TABLE IF EXISTS bench.inc_full; DROP TABLE IF EXISTS bench.inc_merge")
        .execute(&mut *conn)
        .await
        .expect("drop targets");
    let options = json!({"task_timeout_s": 3600, "flow_timeout_s": 7200});
    let full = server
        .post(
            "/flow-inputs",
            json!({"name": "inc_full", "source_store_ids": [pg_id], "target_store_id": pg_id,
                "sources": [{"name": "s", "store_id": pg_id, "table": "bench.inc"}],
                "outputs": [{"node": "s", "table": "bench.inc_full", "mode": "replace"}],
                "options": options}),
        )
        .await["id"]
        .as_i64()
        .expect("input id");
    let inc = server
        .post(
            "/flow-inputs",
            json!({"name": "inc_merge", "source_store_ids": [pg_id], "target_store_id": pg_id,
                "sources": [{"name": "s", "store_id": pg_id, "table": "bench.inc",
                             "incremental": {"cursor": "updated_at"}}],
                "outputs": [{"node": "s", "table": "bench.inc_merge", "mode": "merge",
                             "unique_key": ["id"]}],
                "options": options}),
        )
        .await["id"]
        .as_i64()
        .expect("input id");
    let rows_read = |f: &Value| f["output"]["cursors"]["s"]["rows"].as_u64().unwrap_or(0);

    let (first, _, f) = server.run(json!({"flow_input_id": inc})).await;
    println!(
        "  first incremental run (reads all)   {:>8.2} s  {:>9} rows read",
        first.as_secs_f64(),
        rows_read(&f)
    );
    // 1% changed before each of three interleaved pairs (full replace, incremental); then 0.1%
    // changed before each of three incremental runs, to see the time follow the changed rows.
    let mut fulls = Vec::new();
    let mut lines = Vec::new();
    for every in [100u64, 1000] {
        let (mut incs, mut reads, mut changed) = (Vec::new(), Vec::new(), 0);
        for round in 1..=3 {
            changed = change_rows(conn, every, round).await;
            if every == 100 {
                fulls.push(server.run_flow(full).await.0);
            }
            let (took, _, f) = server.run(json!({"flow_input_id": inc})).await;
            incs.push(took);
            reads.push(rows_read(&f));
            let (source, target) = (
                fingerprint(conn, "bench.inc").await,
                fingerprint(conn, "bench.inc_merge").await,
            );
            assert_eq!(source, target, "the merge target differs from its source");
        }
        reads.sort_unstable();
        lines.push((changed, median(incs), reads[reads.len() / 2]));
    }
    let full_t = median(fulls);
    println!(
        "  full replace                        {:>8.2} s  {rows:>9} rows read",
        full_t.as_secs_f64()
    );
    for (changed, inc_t, read) in lines {
        println!(
            "  {:<35} {:>8.2} s  {read:>9} rows read  {:.3}× the full run's time, {:.3}× its rows",
            format!("incremental, {changed} rows changed"),
            inc_t.as_secs_f64(),
            inc_t.as_secs_f64() / full_t.as_secs_f64(),
            read as f64 / rows as f64
        );
    }
    println!("  (after each incremental run the merge target equalled the source: count and sum checked)");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// In a child process: a server ingests `bench.rss_<rows>` into Parquet; prints the peak RSS.
fn rss_child(rows: u64) {
    let pg = Db::parse(&env_or(
        "SLUICE_BENCH_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/sluice_bench",
    ));
    let temp = tempfile::tempdir().expect("temp");
    let files = temp.path().join("files");
    std::fs::create_dir_all(&files).expect("files");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let server = start_server(&temp.path().join("data"), &files, &[]);
        let src = server.post("/data-stores", pg.store("pg", "postgres")).await["id"]
            .as_i64()
            .unwrap();
        let lake = server
            .post(
                "/data-stores",
                json!({"name": "lake", "kind": "file", "engine": "parquet",
                "connection": {"type": "file", "path": files.join("lake")}}),
            )
            .await["id"]
            .as_i64()
            .unwrap();
        let took = flow(&server, "rss", src, &format!("bench.rss_{rows}"), lake, "out").await;
        println!("RSS {rows} {} {:.3}", peak_rss_kib(), took.as_secs_f64());
        server.handle.stop(true).await;
    });
}

fn rss_of(rows: u64) -> (u64, f64) {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args(["--rss-child", &rows.to_string()])
        .output()
        .expect("child");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RSS "))
        .unwrap_or_else(|| panic!("child failed: {}", String::from_utf8_lossy(&out.stderr)));
    let parts: Vec<&str> = line.split_whitespace().collect();
    (parts[2].parse().unwrap(), parts[3].parse().unwrap())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--rss-child") {
        rss_child(args[i + 1].parse().expect("rows"));
        return;
    }
    let pg = Db::parse(&env_or(
        "SLUICE_BENCH_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/sluice_bench",
    ));
    let my = Db::parse(&env_or(
        "SLUICE_BENCH_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/sluice_bench",
    ));
    let rows: u64 = env_or("SLUICE_BENCH_ROWS", "5000000").parse().expect("rows");
    let my_rows: u64 = env_or("SLUICE_BENCH_MYSQL_ROWS", "1000000")
        .parse()
        .expect("rows");
    let inc_rows: u64 = env_or("SLUICE_BENCH_INC_ROWS", "5000000").parse().expect("rows");
    let sections = env_or("SLUICE_BENCH_SECTIONS", "copy,parquet,mysql,rss,incremental");
    let on = |name: &str| sections.split(',').any(|s| s.trim() == name);
    println!(
        "machine: {} cores; {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string()))
            .unwrap_or_default()
    );
    let temp = tempfile::tempdir().expect("temp");
    let files = temp.path().join("files");
    std::fs::create_dir_all(&files).expect("files");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut conn = pg_setup(&pg, rows).await;
        if on("rss") {
            ensure_pg_table(&mut conn, "rss_200000", 200_000).await;
            ensure_pg_table(&mut conn, "rss_2000000", 2_000_000).await;
        }
        if on("mysql") {
            ensure_pg_table(&mut conn, "my_src", my_rows).await;
            let mut admin = sqlx::MySqlConnection::connect(&my.url("mysql"))
                .await
                .expect("mysql");
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE DATABASE IF NOT EXISTS `{}`",
                my.db
            )))
            .execute(&mut admin)
            .await
            .expect("create mysql database");
        }

        let server = start_server(&temp.path().join("data"), &files, &[]);
        let pg_id = server.post("/data-stores", pg.store("pg", "postgres")).await["id"]
            .as_i64()
            .unwrap();
        let lake = server
            .post(
                "/data-stores",
                json!({"name": "lake", "kind": "file", "engine": "parquet",
                "connection": {"type": "file", "path": files.join("lake")}}),
            )
            .await["id"]
            .as_i64()
            .unwrap();

        if on("copy") {
        println!("\n== PostgreSQL → PostgreSQL, {rows} rows (interleaved, 3 runs each, medians) ==");
        let (mut raws, mut directs, mut throughs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            raws.push(raw_copy_pipe(&pg));
            directs.push(flow(&server, "pg2pg", pg_id, "bench.src", pg_id, "bench.copy").await);
            throughs.push(flow_through(&server, "pg2pg_t", pg_id, "bench.src", pg_id, "bench.copy_t").await);
        }
        let (raw, ours, through) = (median(raws), median(directs), median(throughs));
        println!(
            "  raw COPY pipe (psql | psql)        {:>8.2} s  {:>12.0} rows/s",
            raw.as_secs_f64(),
            rate(rows, raw)
        );
        println!(
            "  Sluice flow, source → output       {:>8.2} s  {:>12.0} rows/s  {:.2}× the pipe",
            ours.as_secs_f64(),
            rate(rows, ours),
            raw.as_secs_f64() / ours.as_secs_f64()
        );
        println!(
            "  Sluice flow, through SELECT * FROM {:>8.2} s  {:>12.0} rows/s  {:.2}× the pipe",
            through.as_secs_f64(),
            rate(rows, through),
            raw.as_secs_f64() / through.as_secs_f64()
        );

        }
        if on("parquet") {
        println!("\n== PostgreSQL → Parquet, {rows} rows ==");
        let t = flow(&server, "pg2parquet", pg_id, "bench.src", lake, "src").await;
        println!(
            "  Sluice flow                   {:>8.2} s  {:>12.0} rows/s",
            t.as_secs_f64(),
            rate(rows, t)
        );

        }
        if on("mysql") {
        let my_id = server.post("/data-stores", my.store("my", "mysql")).await["id"]
            .as_i64()
            .unwrap();
        println!("\n== PostgreSQL → MySQL and MySQL → PostgreSQL, {my_rows} rows ==");
        let t = flow(&server, "pg2my", pg_id, "bench.my_src", my_id, "bench_src").await;
        println!(
            "  PostgreSQL → MySQL            {:>8.2} s  {:>12.0} rows/s",
            t.as_secs_f64(),
            rate(my_rows, t)
        );
        let t = flow(&server, "my2pg", my_id, "bench_src", pg_id, "bench.from_mysql").await;
        println!(
            "  MySQL → PostgreSQL            {:>8.2} s  {:>12.0} rows/s",
            t.as_secs_f64(),
            rate(my_rows, t)
        );
        }
        if on("incremental") {
            println!(
                "\n== Incremental: cursor source → merge output vs full replace, {inc_rows} rows, 1% then 0.1% changed per run (interleaved, 3 runs each, medians) =="
            );
            incremental_section(&server, &mut conn, pg_id, inc_rows).await;
        }
        server.handle.stop(true).await;
    });

    if !on("rss") {
        return;
    }
    println!("\n== Peak RSS of a fresh server ingesting PostgreSQL → Parquet ==");
    for n in [200_000u64, 2_000_000] {
        let (kib, secs) = rss_of(n);
        println!(
            "  {n:>9} rows  peak RSS {:>7.1} MiB  ({secs:.2} s)",
            kib as f64 / 1024.0
        );
    }
}
