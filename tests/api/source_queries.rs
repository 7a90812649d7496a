//! Sources only read. A source query is exactly one statement, run in a read-only
//! transaction, on every engine: a query that tries to write (a smuggled `COMMIT; DROP`, a
//! second statement, a data-modifying CTE, `FOR UPDATE`, a function that writes, SQLite's
//! `VACUUM INTO`) fails its task with a message that says why, and the table is intact
//! afterwards. Queries that sqlparser counts as several statements are refused at validation.
//!
//! The PostgreSQL and MariaDB tests need `SLUICE_TEST_POSTGRES_URL` / `SLUICE_TEST_MYSQL_URL`
//! and are skipped, saying so on stderr, without them.

use serde_json::{json, Value};

use crate::helpers::*;

/// A query that must not run, and words its task's error must contain.
struct Refused {
    query: String,
    says: &'static [&'static str],
}

fn refused(query: impl Into<String>, says: &'static [&'static str]) -> Refused {
    Refused {
        query: query.into(),
        says,
    }
}

/// Each multi-statement query is a 422 at its own `sources[i].query`, saying how many
/// statements it is.
async fn multi_statement_queries_are_422(app: &TestApp, store: i64, table: &str) {
    let reply = app
        .post(
            "/flow-inputs",
            &json!({
                "name": "multi", "source_store_ids": [store], "target_store_id": store,
                "sources": [
                    {"name": "commit_drop", "store_id": store,
                     "query": format!("SELECT 1 AS x; COMMIT; DROP TABLE {table}")},
                    {"name": "drop", "store_id": store, "query": format!("SELECT 1 AS x; DROP TABLE {table};")},
                    {"name": "one", "store_id": store, "query": "SELECT ';' AS x;"}
                ],
                "outputs": [{"node": "commit_drop"}, {"node": "drop"}, {"node": "one"}]
            }),
        )
        .await
        .expect(422);
    assert_eq!(
        reply.error_paths(),
        ["sources[0].query", "sources[1].query"],
        "{:#}",
        reply.body
    );
    let messages = reply.body["errors"].to_string();
    assert!(
        messages.contains("is 3 statements") && messages.contains("is 2 statements"),
        "{messages}"
    );
}

/// Runs one flow that reads every query of `cases` as a source of `store`, each into its own
/// output: the flow fails, nothing is published, and each task says why in the case's words.
async fn every_query_is_refused(app: &TestApp, store: i64, cases: &[Refused]) {
    let target = app.sqlite_store("target", "out/w.db").await;
    let sources: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"name": format!("q{i}"), "store_id": store, "query": c.query}))
        .collect();
    let outputs: Vec<Value> = (0..cases.len())
        .map(|i| json!({"node": format!("q{i}")}))
        .collect();
    let input = app
        .create_input(json!({
            "name": "writes", "source_store_ids": [store], "target_store_id": target,
            "sources": sources, "outputs": outputs,
            "options": {"max_attempts": 1, "fail_fast": false}
        }))
        .await;
    let done = app.wait_final(app.start_flow(input).await).await;
    assert_eq!(state(&done), "FAILED", "{done:#}");
    let mut wrong = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let t = task(&done, &format!("q{i}"));
        let error = t["error"].as_str().unwrap_or_default().to_lowercase();
        if t["state"] != "FAILED" || !case.says.iter().all(|w| error.contains(&w.to_lowercase())) {
            wrong.push(format!(
                "  {:?}: {} {:?}, want it to mention {:?}",
                case.query, t["state"], t["error"], case.says
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "queries not refused as they should be:\n{}",
        wrong.join("\n")
    );
}

const TRIED_TO_WRITE: &[&str] = &["tried to write", "read-only transaction"];

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn postgres_source_queries_only_read() {
    let url = pg_url();
    let pg = PgScratch::new(&url, "sl_readonly").await;
    let t = pg.t("t");
    pg.exec(&format!(
        "CREATE TABLE {t} (id integer PRIMARY KEY, v text, amount numeric(10,2)); \
         INSERT INTO {t} VALUES (1, 'a', 1.50), (2, 'b', 2.25); \
         CREATE FUNCTION {s}.bump() RETURNS integer LANGUAGE sql \
           AS 'INSERT INTO {t} VALUES (99, ''x'', 0) RETURNING 1'",
        s = pg.schema
    ))
    .await;
    let app = spawn_app().await;
    let store = app.postgres_store("pg", &url).await;
    multi_statement_queries_are_422(&app, store, &t).await;
    every_query_is_refused(
        &app,
        store,
        &[
            // sqlparser cannot parse CHECKPOINT, so these pass validation: PostgreSQL itself
            // refuses a second statement in a prepared one.
            refused(
                format!("SELECT 1 AS x; COMMIT; DROP TABLE {t}; CHECKPOINT"),
                &["multiple commands"],
            ),
            refused(
                format!("SELECT 1 AS x; DROP TABLE {t}; CHECKPOINT"),
                &["multiple commands"],
            ),
            refused(
                format!("WITH d AS (DELETE FROM {t} RETURNING *) SELECT * FROM d"),
                &["data-modifying"],
            ),
            refused(format!("SELECT * FROM {t} FOR UPDATE"), TRIED_TO_WRITE),
            refused(format!("SELECT {}.bump() AS b", pg.schema), TRIED_TO_WRITE),
        ],
    )
    .await;
    assert_eq!(
        pg.rows("SELECT count(*), max(id) FROM t").await,
        vec![vec![Some("2".to_string()), Some("2".to_string())]],
        "the table is intact"
    );

    // Reading still works, typed by PostgreSQL: casts in the query keep their precision.
    let lite = app.sqlite_store("lite", "out/read.db").await;
    let input = app
        .create_input(json!({
            "name": "reads", "source_store_ids": [store], "target_store_id": lite,
            "sources": [{"name": "r", "store_id": store,
                         "query": format!("SELECT id, v, amount, amount::numeric(12,3) AS wide FROM {t} WHERE id > 0;")}],
            "outputs": [{"node": "r", "table": "r"}]
        }))
        .await;
    let done = app.wait_final(app.start_flow(input).await).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    let db = app.file("out/read.db");
    assert_eq!(
        sqlite_text(&db, "SELECT id, v, amount, wide FROM r ORDER BY id").await,
        vec![
            vec![
                Some("1".into()),
                Some("a".into()),
                Some("1.5".into()),
                Some("1.5".into())
            ],
            vec![
                Some("2".into()),
                Some("b".into()),
                Some("2.25".into()),
                Some("2.25".into())
            ],
        ]
    );
    let decls: Vec<String> = sqlite_columns(&db, "r")
        .await
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(decls, ["INTEGER", "TEXT", "DECIMAL(10,2)", "DECIMAL(12,3)"]);
    pg.drop().await;
}

#[tokio::test]
#[cfg_attr(not(sluice_mysql), ignore = "SLUICE_TEST_MYSQL_URL is not set")]
async fn mysql_source_queries_only_read() {
    let url = mysql_url();
    let my = MyScratch::new(&url, "sl_readonly").await;
    my.exec(
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(10), amount decimal(10,2)) ENGINE=InnoDB; \
         INSERT INTO t VALUES (1, 'a', 1.50), (2, 'b', 2.25)",
    )
    .await;
    my.exec(
        "CREATE FUNCTION bump() RETURNS INT MODIFIES SQL DATA \
         BEGIN INSERT INTO t VALUES (99, 'x', 0); RETURN 1; END",
    )
    .await;
    let app = spawn_app().await;
    let store = app.mysql_store("my", &my.url).await;
    multi_statement_queries_are_422(&app, store, "t").await;
    every_query_is_refused(
        &app,
        store,
        &[
            // sqlparser cannot parse `DO 1`, so these pass validation: MySQL itself refuses a
            // second statement in a prepared one.
            refused("SELECT 1 AS x; COMMIT; DROP TABLE t; DO 1", &["syntax"]),
            refused("SELECT 1 AS x; DROP TABLE t; DO 1", &["syntax"]),
            // Not MySQL syntax, and it stays so.
            refused(
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                &["syntax"],
            ),
            refused("SELECT * FROM t FOR UPDATE", TRIED_TO_WRITE),
            refused("SELECT bump() AS b", TRIED_TO_WRITE),
            // A scalar subquery: MySQL evaluates it while it plans.
            refused("SELECT (SELECT bump()) AS b", TRIED_TO_WRITE),
        ],
    )
    .await;
    assert_eq!(
        my.rows("SELECT count(*), max(id) FROM t").await,
        vec![vec![Some("2".to_string()), Some("2".to_string())]],
        "the table is intact"
    );

    // Reading still works; a column read from a table keeps its declared type.
    let lite = app.sqlite_store("lite", "out/read.db").await;
    let input = app
        .create_input(json!({
            "name": "reads", "source_store_ids": [store], "target_store_id": lite,
            "sources": [{"name": "r", "store_id": store,
                         "query": "SELECT id, v, amount, amount * 2 AS twice FROM t WHERE id > 0"}],
            "outputs": [{"node": "r", "table": "r"}]
        }))
        .await;
    let done = app.wait_final(app.start_flow(input).await).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    let db = app.file("out/read.db");
    assert_eq!(
        sqlite_text(&db, "SELECT id, v, amount, twice FROM r ORDER BY id").await,
        vec![
            vec![
                Some("1".into()),
                Some("a".into()),
                Some("1.5".into()),
                Some("3.00".into())
            ],
            vec![
                Some("2".into()),
                Some("b".into()),
                Some("2.25".into()),
                Some("4.50".into())
            ],
        ]
    );
    let decls: Vec<String> = sqlite_columns(&db, "r")
        .await
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(decls, ["INTEGER", "TEXT", "DECIMAL(10,2)", "TEXT"]);
    my.drop().await;
}

#[tokio::test]
async fn sqlite_source_queries_only_read() {
    let app = spawn_app().await;
    let src = app.file("in/src.db");
    seed_sqlite(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, d DATE); \
         INSERT INTO t VALUES (1, 'a', '2026-01-31'), (2, 'b', '2026-02-01')",
    )
    .await;
    let store = app.sqlite_store("src", "in/src.db").await;
    multi_statement_queries_are_422(&app, store, "t").await;
    let copy = app.file("in/copy.db");
    every_query_is_refused(
        &app,
        store,
        &[
            // sqlparser cannot parse a bare REINDEX, so these pass validation.
            refused(
                "SELECT 1 AS x; COMMIT; DROP TABLE t; REINDEX",
                &["more than one statement"],
            ),
            refused(
                "SELECT 1 AS x; DROP TABLE t; REINDEX",
                &["more than one statement"],
            ),
            refused(
                "SELECT 1 AS x /* ; */; DROP TABLE t; REINDEX",
                &["more than one statement"],
            ),
            // Not SQLite syntax in a query, and it stays so.
            refused(
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                &["syntax error"],
            ),
            refused("SELECT * FROM t FOR UPDATE", &["syntax error"]),
            // A write after a WITH: refused by the read-only connection.
            refused(
                "WITH x AS (SELECT 1) DELETE FROM t",
                &["tried to write", "read-only connection"],
            ),
            // One statement that writes a file, even on a read-only connection.
            refused(format!("VACUUM INTO '{}'", copy.display()), &["not VACUUM"]),
        ],
    )
    .await;
    assert_eq!(
        sqlite_text(&src, "SELECT count(*), max(id) FROM t").await,
        vec![vec![Some("2".to_string()), Some("2".to_string())]],
        "the table is intact"
    );
    assert!(!copy.exists(), "VACUUM INTO wrote {}", copy.display());

    // Reading still works, with the declared types of the columns read.
    let lite = app.sqlite_store("lite", "out/read.db").await;
    let input = app
        .create_input(json!({
            "name": "reads", "source_store_ids": [store], "target_store_id": lite,
            "sources": [{"name": "r", "store_id": store,
                         "query": "SELECT id, v, d FROM t WHERE id > 0 ORDER BY id; -- the end"}],
            "outputs": [{"node": "r", "table": "r"}]
        }))
        .await;
    let done = app.wait_final(app.start_flow(input).await).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    let db = app.file("out/read.db");
    assert_eq!(
        sqlite_text(&db, "SELECT id, v, d FROM r ORDER BY id").await,
        vec![
            vec![Some("1".into()), Some("a".into()), Some("2026-01-31".into())],
            vec![Some("2".into()), Some("b".into()), Some("2026-02-01".into())],
        ]
    );
    let decls: Vec<String> = sqlite_columns(&db, "r")
        .await
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(decls, ["INTEGER", "TEXT", "DATE"]);
}
