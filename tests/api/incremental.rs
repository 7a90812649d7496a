//! Incremental cursor sources against real PostgreSQL and MariaDB (and SQLite): runs with
//! inserts, updates and deletes-by-flag between them each read exactly the changed rows, and
//! the merged target equals a full recompute; a row committed later with a cursor equal to the
//! mark is read by the next run; a FAILED run moves no mark; two flows of one input never run
//! at once; `full_refresh` reads everything.

use serde_json::{json, Value};

use crate::helpers::*;

/// The database a scenario works in.
enum Db {
    Postgres(PgScratch),
    Mysql(MyScratch),
}

impl Db {
    fn table(&self, name: &str) -> String {
        match self {
            Db::Postgres(s) => s.t(name),
            Db::Mysql(_) => name.to_string(),
        }
    }

    async fn exec(&self, sql: &str) {
        match self {
            Db::Postgres(s) => s.exec(sql).await,
            Db::Mysql(s) => s.exec(sql).await,
        }
    }

    async fn rows(&self, sql: &str) -> Vec<String> {
        let rows = match self {
            Db::Postgres(s) => s.rows(sql).await,
            Db::Mysql(s) => s.rows(sql).await,
        };
        rows.into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|c| c.unwrap_or_else(|| "-".into()))
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    }

    /// The target, and what a full recompute of it gives: the same rows.
    async fn target_and_recompute(&self) -> (Vec<String>, Vec<String>) {
        let target = self
            .rows(&format!(
                "SELECT order_id, status, amount, deleted FROM {} ORDER BY order_id",
                self.table("fct_orders")
            ))
            .await;
        let recompute = self
            .rows(&format!(
                "SELECT order_id, status, amount, deleted FROM {} ORDER BY order_id",
                self.table("orders")
            ))
            .await;
        (target, recompute)
    }
}

fn at(second: u32) -> String {
    format!("'2026-01-01 00:00:{second:02}'")
}

fn input_body(db: &Db, store: i64) -> Value {
    json!({
        "name": "orders_incremental", "source_store_ids": [store], "target_store_id": store,
        "sources": [{"name": "orders", "store_id": store, "table": db.table("orders"),
                     "incremental": {"cursor": "updated_at"}}],
        "transforms": [{"name": "fct_orders",
                        "sql": "SELECT order_id, status, amount, deleted FROM orders \
                                WHERE 1 / CASE WHEN status = 'boom' THEN 0 ELSE 1 END = 1"}],
        "outputs": [{"node": "fct_orders", "table": db.table("fct_orders"), "mode": "merge",
                     "unique_key": ["order_id"]}]
    })
}

async fn run(api: &Api, body: Value) -> Value {
    let id = api.post("/flows", &body).await.expect(202).id();
    api.wait_final(id).await
}

fn cursor(flow: &Value) -> &Value {
    &flow["output"]["cursors"]["orders"]
}

#[track_caller]
fn completed(flow: &Value) {
    assert_eq!(state(flow), "COMPLETED", "{flow:#}");
}

/// The whole story on one database. `ts` renders second `n` of the cursor as the database
/// shows it in `output.cursors`.
async fn scenario(api: &Api, db: &Db, store: i64, ts: impl Fn(u32) -> String) {
    let orders = db.table("orders");
    db.exec(&format!(
        "INSERT INTO {orders} (order_id, status, amount, deleted, updated_at) VALUES \
         (1, 'placed', 10, false, {}), (2, 'placed', 20, false, {}), (3, 'placed', 30, false, {}), \
         (4, 'shipped', 40, false, {}), (5, 'placed', 50, false, {})",
        at(1),
        at(2),
        at(3),
        at(4),
        at(5)
    ))
    .await;
    let input = api.create_input(input_body(db, store)).await;
    let flow = |extra: Value| {
        let mut body = json!({"flow_input_id": input});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };

    // 1: everything.
    let first = run(api, flow(json!({}))).await;
    completed(&first);
    assert_eq!(
        *cursor(&first),
        json!({"column": "updated_at", "after": null, "through": ts(5), "rows": 5,
               "boundary": cursor(&first)["boundary"].clone()}),
        "{first:#}"
    );
    assert_eq!(cursor(&first)["boundary"].as_array().map(Vec::len), Some(1));
    let (target, recompute) = db.target_and_recompute().await;
    assert_eq!(target, recompute);
    assert_eq!(target.len(), 5);

    // 2: an update, an insert and a delete-by-flag: exactly those three rows.
    db.exec(&format!(
        "UPDATE {orders} SET status = 'shipped', updated_at = {} WHERE order_id = 2",
        at(6)
    ))
    .await;
    db.exec(&format!(
        "INSERT INTO {orders} (order_id, status, amount, deleted, updated_at) VALUES (6, 'placed', 60, false, {})",
        at(7)
    ))
    .await;
    db.exec(&format!(
        "UPDATE {orders} SET deleted = true, updated_at = {} WHERE order_id = 3",
        at(8)
    ))
    .await;
    let second = run(api, flow(json!({}))).await;
    completed(&second);
    assert_eq!(cursor(&second)["after"], ts(5));
    assert_eq!(cursor(&second)["through"], ts(8));
    assert_eq!(cursor(&second)["rows"], 3, "{second:#}");
    let (target, recompute) = db.target_and_recompute().await;
    assert_eq!(target, recompute);

    // The boundary: a row committed after run 2 with a cursor equal to its mark is read by
    // run 3, beside a new change; the row run 2 read at the mark is not read again.
    db.exec(&format!(
        "INSERT INTO {orders} (order_id, status, amount, deleted, updated_at) VALUES (7, 'late', 70, false, {})",
        at(8)
    ))
    .await;
    db.exec(&format!(
        "UPDATE {orders} SET amount = 11, updated_at = {} WHERE order_id = 1",
        at(9)
    ))
    .await;
    let third = run(api, flow(json!({}))).await;
    completed(&third);
    assert_eq!(cursor(&third)["after"], ts(8));
    assert_eq!(cursor(&third)["rows"], 2, "{third:#}");
    assert_eq!(cursor(&third)["through"], ts(9));
    let (target, recompute) = db.target_and_recompute().await;
    assert_eq!(target, recompute);

    // A failed run moves no mark: the next one starts where run 3 ended.
    db.exec(&format!(
        "INSERT INTO {orders} (order_id, status, amount, deleted, updated_at) VALUES (8, 'boom', 80, false, {})",
        at(10)
    ))
    .await;
    let failed = run(api, flow(json!({}))).await;
    assert_eq!(state(&failed), "FAILED", "{failed:#}");
    let (target, _) = db.target_and_recompute().await;
    assert_eq!(target.len(), 7, "the failed run published nothing");
    db.exec(&format!(
        "UPDATE {orders} SET status = 'placed', updated_at = {} WHERE order_id = 8",
        at(11)
    ))
    .await;
    let fourth = run(api, flow(json!({}))).await;
    completed(&fourth);
    assert_eq!(cursor(&fourth)["after"], ts(9), "{fourth:#}");
    assert_eq!(cursor(&fourth)["rows"], 1);
    let (target, recompute) = db.target_and_recompute().await;
    assert_eq!(target, recompute);

    // Nothing changed: nothing read, the mark stays.
    let idle = run(api, flow(json!({}))).await;
    completed(&idle);
    assert_eq!(cursor(&idle)["rows"], 0);
    assert_eq!(cursor(&idle)["through"], ts(11));

    // full_refresh reads everything.
    let full = run(api, flow(json!({"full_refresh": true}))).await;
    completed(&full);
    assert_eq!(cursor(&full)["after"], Value::Null);
    assert_eq!(cursor(&full)["rows"], 8);
    let (target, recompute) = db.target_and_recompute().await;
    assert_eq!(target, recompute);

    // Two flows of the input at once: the second waits READY until the first has ended, and
    // starts from its mark.
    db.exec(&format!(
        "UPDATE {orders} SET amount = 12, updated_at = {} WHERE order_id = 1",
        at(12)
    ))
    .await;
    let a = api.post("/flows", &flow(json!({}))).await.expect(202).id();
    let b = api.post("/flows", &flow(json!({}))).await.expect(202).id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (fa, fb) = (api.flow(a).await, api.flow(b).await);
        assert!(
            state(&fb) != "RUNNING" || is_final(state(&fa)),
            "flow {b} ran while flow {a} was {}",
            state(&fa)
        );
        if is_final(state(&fa)) && is_final(state(&fb)) {
            completed(&fa);
            completed(&fb);
            assert_eq!(cursor(&fa)["rows"], 1);
            assert_eq!(cursor(&fb)["after"], cursor(&fa)["through"]);
            assert_eq!(cursor(&fb)["rows"], 0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flows {a} and {b} did not end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn postgres_cursor_runs_read_exactly_what_changed() {
    let app = spawn_app().await;
    let scratch = PgScratch::new(&pg_url(), "incr").await;
    scratch
        .exec(
            "CREATE TABLE orders (order_id bigint PRIMARY KEY, status text, amount bigint, \
             deleted boolean NOT NULL, updated_at timestamptz)",
        )
        .await;
    let store = app.postgres_store("pg", &pg_url()).await;
    let db = Db::Postgres(scratch);
    scenario(&app, &db, store, |s| format!("2026-01-01T00:00:{s:02}.000000Z")).await;
    let Db::Postgres(scratch) = db else { unreachable!() };
    scratch.drop().await;
}

#[tokio::test]
#[cfg_attr(not(sluice_mysql), ignore = "SLUICE_TEST_MYSQL_URL is not set")]
async fn mysql_cursor_runs_read_exactly_what_changed() {
    let app = spawn_app().await;
    let scratch = MyScratch::new(&mysql_url(), "incr").await;
    scratch
        .exec(
            "CREATE TABLE orders (order_id bigint PRIMARY KEY, status varchar(20), amount bigint, \
             deleted boolean NOT NULL, updated_at datetime(6))",
        )
        .await;
    let store = app.mysql_store("my", &scratch.url).await;
    let db = Db::Mysql(scratch);
    scenario(&app, &db, store, |s| format!("2026-01-01T00:00:{s:02}.000000")).await;
    let Db::Mysql(scratch) = db else { unreachable!() };
    scratch.drop().await;
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn null_cursors_are_skipped_and_counted_and_a_query_source_reads_incrementally() {
    let app = spawn_app().await;
    let scratch = PgScratch::new(&pg_url(), "incr_q").await;
    scratch
        .exec(
            "CREATE TABLE events (id bigint, seq numeric(12,2)); \
             INSERT INTO events VALUES (1, 1.50), (2, NULL), (3, 2.25)",
        )
        .await;
    let store = app.postgres_store("pg", &pg_url()).await;
    let out = app.csv_store("out", "out").await;
    let body = json!({
        "name": "events_incremental", "source_store_ids": [store], "target_store_id": out,
        "sources": [{"name": "events", "store_id": store,
                     "query": format!("SELECT id, seq FROM {} WHERE id < 100", scratch.t("events")),
                     "incremental": {"cursor": "seq"}}],
        "transforms": [{"name": "all_events", "sql": "SELECT id, seq FROM events"}],
        "outputs": [{"node": "all_events", "mode": "append"}]
    });
    let input = app.create_input(body).await;
    let first = run(&app, json!({"flow_input_id": input})).await;
    completed(&first);
    let c = &first["output"]["cursors"]["events"];
    assert_eq!(
        (c["rows"].clone(), c["null_rows"].clone(), c["through"].clone()),
        (json!(2), json!(1), json!("2.25"))
    );
    let logs = first["output"]["logs"]["lines"].to_string();
    assert!(logs.contains("skipped 1 row whose seq is NULL"), "{logs}");
    scratch
        .exec("INSERT INTO events VALUES (4, 2.26), (5, 2.24)")
        .await;
    let second = run(&app, json!({"flow_input_id": input})).await;
    completed(&second);
    assert_eq!(second["output"]["cursors"]["events"]["rows"], 1, "{second:#}");
    let text = std::fs::read_to_string(app.file("out/all_events.csv")).unwrap();
    assert_eq!(
        text, "id,seq\n1,1.50\n3,2.25\n4,2.26\n",
        "appended exactly once each"
    );
    scratch.drop().await;
}

#[tokio::test]
async fn sqlite_integer_cursor_and_validation() {
    let app = spawn_app().await;
    let db = app.file("src.db");
    seed_sqlite(
        &db,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, version INTEGER);
         INSERT INTO items VALUES (1, 'a', 1), (2, 'b', 2);",
    )
    .await;
    let src = app.sqlite_store("src", "src.db").await;
    let out = app.sqlite_store("wh", "wh.db").await;
    let csv = app.csv_store("raw", "raw").await;

    // A cursor reads a database; it needs a column.
    let bad = app
        .post(
            "/flow-inputs",
            &json!({"name": "bad", "source_store_ids": [src, csv], "target_store_id": out,
                    "sources": [{"name": "items", "store_id": src, "table": "items", "incremental": {}},
                                {"name": "files", "store_id": csv, "path": "*.csv", "incremental": {"cursor": "id"}},
                                {"name": "blank", "store_id": src, "table": "items", "incremental": {"cursor": " "}}],
                    "transforms": [{"name": "t", "sql": "SELECT * FROM items"}]}),
        )
        .await
        .expect(422);
    assert_eq!(
        bad.error_paths(),
        [
            "sources[0].incremental",
            "sources[1].incremental.cursor",
            "sources[2].incremental.cursor"
        ],
        "{:#}",
        bad.body
    );

    let input = app
        .create_input(json!({"name": "items", "source_store_ids": [src], "target_store_id": out,
            "sources": [{"name": "items", "store_id": src, "table": "items", "incremental": {"cursor": "version"}}],
            "transforms": [{"name": "dim_items", "sql": "SELECT id, name, version FROM items"}],
            "outputs": [{"node": "dim_items", "mode": "merge", "unique_key": ["id"]}]}))
        .await;
    let first = run(&app, json!({"flow_input_id": input})).await;
    completed(&first);
    assert_eq!(first["output"]["cursors"]["items"]["through"], 2);
    let edit = |sql: &'static str| {
        let db = db.clone();
        async move {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        }
    };
    edit("UPDATE items SET name = 'a2', version = 3 WHERE id = 1; INSERT INTO items VALUES (3, 'c', 4)")
        .await;
    let second = run(&app, json!({"flow_input_id": input})).await;
    completed(&second);
    assert_eq!(second["output"]["cursors"]["items"]["rows"], 2, "{second:#}");
    let rows = sqlite_text(
        &app.file("wh.db"),
        "SELECT id, name, version FROM dim_items ORDER BY id",
    )
    .await;
    let got: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.into_iter().map(|c| c.unwrap()).collect())
        .collect();
    assert_eq!(got, [["1", "a2", "3"], ["2", "b", "2"], ["3", "c", "4"]]);
    // Rows read per source: 2 by the first run, the 2 changed ones by the second.
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "sluice_source_rows_read_total{flow_input=\"items\",source=\"items\"} 4"),
        "{metrics}"
    );

    // An unknown cursor column fails the flow with a hint.
    let wrong = app
        .create_input(json!({"name": "wrong", "source_store_ids": [src], "target_store_id": out,
            "sources": [{"name": "items", "store_id": src, "table": "items", "incremental": {"cursor": "versoin"}}],
            "transforms": [{"name": "w", "sql": "SELECT * FROM items"}]}))
        .await;
    let failed = run(&app, json!({"flow_input_id": wrong})).await;
    assert_eq!(state(&failed), "FAILED");
    let errors = failed["output"]["errors"]["lines"].to_string();
    assert!(errors.contains("did you mean \\\"version\\\""), "{errors}");
}

/// The process dies right after it published a flow's output, before the flow's final state
/// (with its cursors) is written, as a kill -9 there would leave it. The next start resumes the
/// flow: it publishes nothing twice and completes with the cursor of what it published, so the
/// next flow reads exactly the rows added since — into an `append` output, where a duplicate or
/// a lost row would show.
#[tokio::test]
async fn a_crash_between_publish_and_the_final_write_neither_duplicates_nor_loses_rows() {
    use crate::process::ServerProcess;
    let temp = tempfile::tempdir().unwrap();
    let (data, files, log) = (
        temp.path().join("data"),
        temp.path().join("files"),
        temp.path().join("server.log"),
    );
    std::fs::create_dir_all(&files).unwrap();
    let src_db = files.join("src.db");
    let exec = |sql: &'static str| {
        let db = src_db.clone();
        async move { seed_sqlite(&db, sql).await }
    };
    exec("CREATE TABLE events (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO events VALUES (1, 'a'), (2, 'b'), (3, 'c');")
        .await;

    let mut server = ServerProcess::start(&data, &files, &log, &[]).await;
    let store = |name: &str, file: &str| {
        json!({"name": name, "kind": "relational_db", "engine": "sqlite",
               "connection": {"type": "file", "path": files.join(file)}})
    };
    let src = server.create_store(store("src", "src.db")).await;
    let out = server.create_store(store("out", "out.db")).await;
    let input = server
        .create_input(json!({"name": "fault_abort_after_publish_events", "source_store_ids": [src],
            "target_store_id": out,
            "sources": [{"name": "events", "store_id": src, "table": "events", "incremental": {"cursor": "id"}}],
            "transforms": [{"name": "copied", "sql": "SELECT id, v FROM events"}],
            "outputs": [{"node": "copied", "mode": "append"}]}))
        .await;
    let first = server.start_flow(input).await;
    let exit = server.wait_exit(std::time::Duration::from_secs(60)).await;
    assert!(!exit.success(), "the server died after publishing: {exit:?}");
    let published = sqlite_text(&files.join("out.db"), "SELECT id FROM copied ORDER BY id").await;
    assert_eq!(published.len(), 3, "the output was published before the crash");

    let server = ServerProcess::start(&data, &files, &log, &[]).await;
    let resumed = server.wait_final(first).await;
    completed(&resumed);
    let c = &resumed["output"]["cursors"]["events"];
    assert_eq!(
        (c["rows"].clone(), c["through"].clone()),
        (json!(3), json!(3)),
        "{resumed:#}"
    );
    let logs = resumed["output"]["logs"]["lines"].to_string();
    assert!(logs.contains("resumed after restart"), "{logs}");

    exec("INSERT INTO events VALUES (4, 'd'), (5, 'e');").await;
    let second = server.start_flow(input).await;
    let second = server.wait_final(second).await;
    completed(&second);
    assert_eq!(second["output"]["cursors"]["events"]["after"], 3);
    assert_eq!(second["output"]["cursors"]["events"]["rows"], 2, "{second:#}");
    let rows = sqlite_text(
        &files.join("out.db"),
        "SELECT id, count(*) FROM copied GROUP BY id ORDER BY id",
    )
    .await;
    let got: Vec<String> = rows
        .into_iter()
        .map(|r| format!("{}x{}", r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    assert_eq!(got, ["1x1", "2x1", "3x1", "4x1", "5x1"], "no duplicate, no loss");
}

/// A retry of a `full_refresh` flow is a full refresh too: the nodes it reuses read everything,
/// so the cursor sources it reads again read everything as well (not only what is past the
/// mark of the last completed flow).
#[tokio::test]
async fn a_retry_of_a_full_refresh_reads_everything_again() {
    let app = spawn_app().await;
    let db = app.file("src.db");
    seed_sqlite(
        &db,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, version INTEGER);
         INSERT INTO items VALUES (1, 1), (2, 2), (3, 3);",
    )
    .await;
    app.write_file("raw/base.csv", "x\n10\n");
    app.write_file("raw/extra.csv", "y\n1\n");
    let src = app.sqlite_store("src", "src.db").await;
    let csv = app.csv_store("raw", "raw").await;
    let out = app.sqlite_store("wh", "wh.db").await;
    let input = app
        .create_input(json!({"name": "retried", "source_store_ids": [src, csv], "target_store_id": out,
            "sources": [{"name": "items", "store_id": src, "table": "items", "incremental": {"cursor": "version"}},
                        {"name": "base", "store_id": csv, "path": "base.csv"},
                        {"name": "extra", "store_id": csv, "path": "extra.csv"}],
            "transforms": [{"name": "m", "sql": "SELECT x FROM base", "materialize": true},
                           {"name": "staged", "sql": "SELECT id FROM items", "materialize": true},
                           {"name": "joined", "sql": "SELECT i.id, m.x, e.c FROM staged i CROSS JOIN m CROSS JOIN (SELECT count(*) AS c FROM extra) e"}],
            "outputs": [{"node": "joined", "mode": "replace"}]}))
        .await;
    let first = run(&app, json!({"flow_input_id": input})).await;
    completed(&first);
    assert_eq!(first["output"]["cursors"]["items"]["rows"], 3, "{first:#}");

    // A full refresh fails (a file is missing) after `m` was checkpointed.
    std::fs::remove_file(app.file("raw/extra.csv")).unwrap();
    let failed = run(&app, json!({"flow_input_id": input, "full_refresh": true})).await;
    assert_eq!(state(&failed), "FAILED", "{failed:#}");
    app.write_file("raw/extra.csv", "y\n1\n2\n");
    assert_eq!(task(&failed, "staged")["state"], "COMPLETED", "{failed:#}");
    let retry = run(&app, json!({"flow_input_id": input, "retry_of": failed["id"]})).await;
    completed(&retry);
    assert_eq!(retry["output"]["cursors"]["items"]["rows"], 3, "{retry:#}");
    // `staged` read the incremental source itself: it reads again, and the log says so.
    let logs = retry["output"]["logs"]["lines"].to_string();
    assert!(logs.contains("reusing 2 node(s) it finished: base, m;"), "{logs}");
    assert_eq!(task(&retry, "staged")["attempts"], 1, "{retry:#}");
    let rows = sqlite_text(&app.file("wh.db"), "SELECT id, x, c FROM joined ORDER BY id").await;
    let got: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.into_iter().map(|c| c.unwrap()).collect())
        .collect();
    assert_eq!(got, [["1", "10", "2"], ["2", "10", "2"], ["3", "10", "2"]]);
}

/// The rows of the `events` append target, sorted.
async fn event_rows(app: &TestApp) -> Vec<String> {
    sqlite_text(&app.file("wh.db"), "SELECT id, v FROM events ORDER BY id, v")
        .await
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|c| c.unwrap_or_default())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

/// The paths of the files a `new_files` entry lists.
fn read_paths(flow: &Value) -> Vec<String> {
    flow["output"]["cursors"]["raw"]["files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .map(|f| f["path"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn new_files_runs_read_only_the_files_no_completed_flow_read() {
    let app = spawn_app().await;
    let csv = app.csv_store("landing", "landing").await;
    let out = app.sqlite_store("wh", "wh.db").await;
    app.write_file("landing/events/a.csv", "id,v\n1,a1\n2,a2\n");
    app.write_file("landing/events/b.csv", "id,v\n3,b3\n");
    app.write_file("landing/other.csv", "id,v\n99,never\n");
    let input = app
        .create_input(json!({"name": "events", "source_store_ids": [csv], "target_store_id": out,
            "sources": [{"name": "raw", "store_id": csv, "path": "events/*.csv",
                         "incremental": {"new_files": true}}],
            "transforms": [{"name": "events",
                            "sql": "SELECT id, v FROM raw WHERE 1 / CASE WHEN v = 'boom' THEN 0 ELSE 1 END = 1"}],
            "outputs": [{"node": "events", "mode": "append"}]}))
        .await;
    let flow = |full: bool| json!({"flow_input_id": input, "full_refresh": full});

    // 1: every file of the glob.
    let first = run(&app, flow(false)).await;
    completed(&first);
    assert_eq!(read_paths(&first), ["events/a.csv", "events/b.csv"], "{first:#}");
    let entry = &first["output"]["cursors"]["raw"];
    assert_eq!(entry["rows"], 3, "{first:#}");
    assert_eq!(entry["files"][0]["size"], 15);
    assert!(entry["files"][0]["modified_utc"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        entry.as_object().map(|o| o.len()),
        Some(2),
        "only files and rows: {entry:#}"
    );
    assert_eq!(event_rows(&app).await, ["1|a1", "2|a2", "3|b3"]);

    // 2: a new file and a modified one (read again, whole); b is not read again.
    app.write_file("landing/events/c.csv", "id,v\n4,c4\n");
    app.write_file("landing/events/a.csv", "id,v\n1,a1\n2,a2\n5,a5\n");
    let second = run(&app, flow(false)).await;
    completed(&second);
    assert_eq!(
        read_paths(&second),
        ["events/a.csv", "events/c.csv"],
        "{second:#}"
    );
    assert_eq!(second["output"]["cursors"]["raw"]["rows"], 4);
    assert_eq!(
        event_rows(&app).await,
        ["1|a1", "1|a1", "2|a2", "2|a2", "3|b3", "4|c4", "5|a5"]
    );

    // 3: nothing new: an empty source with the files' columns, nothing appended.
    let idle = run(&app, flow(false)).await;
    completed(&idle);
    assert_eq!(
        idle["output"]["cursors"]["raw"],
        json!({"files": [], "rows": 0}),
        "{idle:#}"
    );
    assert_eq!(event_rows(&app).await.len(), 7);

    // 4: a FAILED flow read d and e: it moves nothing, the next flow reads them again.
    app.write_file("landing/events/d.csv", "id,v\n6,d6\n");
    app.write_file("landing/events/e.csv", "id,v\n7,boom\n");
    let failed = run(&app, flow(false)).await;
    assert_eq!(state(&failed), "FAILED", "{failed:#}");
    app.write_file("landing/events/e.csv", "id,v\n7,e7\n");
    let retried = run(&app, flow(false)).await;
    completed(&retried);
    assert_eq!(
        read_paths(&retried),
        ["events/d.csv", "events/e.csv"],
        "{retried:#}"
    );
    assert_eq!(
        event_rows(&app).await,
        ["1|a1", "1|a1", "2|a2", "2|a2", "3|b3", "4|c4", "5|a5", "6|d6", "7|e7"]
    );

    // 5: full_refresh reads every file again; the next flow then has nothing new.
    let full = run(&app, flow(true)).await;
    completed(&full);
    assert_eq!(
        read_paths(&full),
        [
            "events/a.csv",
            "events/b.csv",
            "events/c.csv",
            "events/d.csv",
            "events/e.csv"
        ]
    );
    assert_eq!(full["output"]["cursors"]["raw"]["rows"], 7);
    let after = run(&app, flow(false)).await;
    completed(&after);
    assert_eq!(read_paths(&after), Vec::<String>::new());
    assert_eq!(event_rows(&app).await.len(), 16);
}

#[tokio::test]
async fn new_files_reads_parquet_files_and_is_validated() {
    let app = spawn_app().await;
    let csv = app.csv_store("landing", "landing").await;
    let pq = app
        .create_store(json!({"name": "pq", "kind": "file", "engine": "parquet",
            "connection": {"type": "file", "path": app.file("pq")}}))
        .await;
    let out = app.sqlite_store("wh", "wh.db").await;
    std::fs::create_dir_all(app.file("pq")).unwrap();

    let bad = app
        .post(
            "/flow-inputs",
            &json!({"name": "bad", "source_store_ids": [csv, out], "target_store_id": out,
                    "sources": [{"name": "a", "store_id": out, "table": "t", "incremental": {"new_files": true}},
                                {"name": "b", "store_id": csv, "path": "*.csv", "incremental": {"new_files": true, "cursor": "id"}},
                                {"name": "c", "store_id": csv, "incremental": {"new_files": true}},
                                {"name": "d", "store_id": csv, "path": "*.csv", "incremental": {"new_files": false}}],
                    "transforms": [{"name": "t2", "sql": "SELECT 1 AS x"}]}),
        )
        .await
        .expect(422);
    assert_eq!(
        bad.error_paths(),
        [
            "sources[0].incremental.new_files",
            "sources[1].incremental",
            "sources[2].incremental.new_files",
            "sources[3].incremental"
        ],
        "{:#}",
        bad.body
    );

    // Parquet files written by a first flow of another input, then read by new_files.
    let writer = app
        .create_input(
            json!({"name": "w", "source_store_ids": [out], "target_store_id": pq,
            "transforms": [{"name": "part1", "sql": "SELECT 1 AS id UNION ALL SELECT 2"}],
            "outputs": [{"node": "part1"}]}),
        )
        .await;
    completed(&run(&app, json!({"flow_input_id": writer})).await);
    let reader = app
        .create_input(
            json!({"name": "r", "source_store_ids": [pq], "target_store_id": out,
            "sources": [{"name": "raw", "store_id": pq, "path": "part*.parquet",
                         "incremental": {"new_files": true}}],
            "transforms": [{"name": "ids", "sql": "SELECT id FROM raw"}],
            "outputs": [{"node": "ids", "mode": "append"}]}),
        )
        .await;
    let first = run(&app, json!({"flow_input_id": reader})).await;
    completed(&first);
    assert_eq!(read_paths(&first), ["part1.parquet"], "{first:#}");
    let second = run(&app, json!({"flow_input_id": reader})).await;
    completed(&second);
    assert_eq!(
        second["output"]["cursors"]["raw"],
        json!({"files": [], "rows": 0})
    );
    let ids = sqlite_text(&app.file("wh.db"), "SELECT id FROM ids ORDER BY id").await;
    assert_eq!(ids.len(), 2, "{ids:?}");

    // Files moved away after they were read: the declared columns, no rows.
    app.write_file("landing/in/a.csv", "id,v\n1,x\n");
    let moved = app
        .create_input(
            json!({"name": "moved", "source_store_ids": [csv], "target_store_id": out,
            "sources": [{"name": "raw", "store_id": csv, "path": "in/*.csv",
                         "csv": {"columns": {"id": "bigint", "v": "text"}},
                         "incremental": {"new_files": true}}],
            "transforms": [{"name": "moved_rows", "sql": "SELECT id, v FROM raw"}],
            "outputs": [{"node": "moved_rows", "mode": "append"}]}),
        )
        .await;
    completed(&run(&app, json!({"flow_input_id": moved})).await);
    std::fs::remove_file(app.file("landing/in/a.csv")).unwrap();
    let gone = run(&app, json!({"flow_input_id": moved})).await;
    completed(&gone);
    assert_eq!(
        gone["output"]["cursors"]["raw"],
        json!({"files": [], "rows": 0}),
        "{gone:#}"
    );

    // No file ever read and none there: the flow fails and says why.
    let never = app
        .create_input(
            json!({"name": "never", "source_store_ids": [csv], "target_store_id": out,
            "sources": [{"name": "raw", "store_id": csv, "path": "none/*.csv",
                         "csv": {"columns": {"id": "bigint"}},
                         "incremental": {"new_files": true}}],
            "transforms": [{"name": "never_rows", "sql": "SELECT id FROM raw"}],
            "outputs": [{"node": "never_rows", "mode": "append"}]}),
        )
        .await;
    let failed = run(&app, json!({"flow_input_id": never})).await;
    assert_eq!(state(&failed), "FAILED");
    let errors = failed["output"]["errors"]["lines"].to_string();
    assert!(
        errors.contains("no file matches \\\"none/*.csv\\\" and no file was read before"),
        "{errors}"
    );
}
