//! Retry from a failed flow (`POST /flows {"flow_input_id", "retry_of"}`): the retry reuses
//! the checkpoints the failed or cancelled flow kept and runs only the rest; 409 and 422 when
//! it cannot; kept checkpoints go after the retention or once a later flow completes.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

fn log_lines(flow: &Value) -> Vec<String> {
    flow["output"]["logs"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

fn work_dir(app: &TestApp, flow: i64) -> std::path::PathBuf {
    app.data_dir.join(format!("work/flow-{flow}"))
}

/// customers is read by two nodes and stg_customers by two: both are checkpointed. orders
/// (inlined into fct) is missing at first, so fct fails; dim and counts complete.
fn shop(src: i64, db: i64) -> Value {
    json!({
        "name": "retry_shop", "source_store_ids": [src], "target_store_id": db,
        "sources": [
            {"name": "customers", "store_id": src, "path": "customers.csv"},
            {"name": "orders", "store_id": src, "path": "orders.csv"}
        ],
        "transforms": [
            {"name": "stg_customers", "sql": "SELECT id, upper(name) AS name FROM customers"},
            {"name": "counts", "sql": "SELECT count(*) AS n FROM customers"},
            {"name": "dim", "sql": "SELECT id, name FROM stg_customers"},
            {"name": "fct", "sql": "SELECT c.name, sum(o.amount) AS total FROM orders o JOIN stg_customers c ON o.customer_id = c.id GROUP BY c.name"}
        ],
        "outputs": [
            {"node": "dim", "table": "dim"},
            {"node": "counts", "table": "counts"},
            {"node": "fct", "table": "fct"}
        ]
    })
}

#[tokio::test]
async fn a_retry_after_a_missing_file_appears_reruns_only_the_failed_part() {
    let app = spawn_app().await;
    app.write_file("in/customers.csv", "id,name\n1,ann\n2,bob\n3,cy\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let input = app.create_input(shop(src, db)).await;
    let failed = app.start_flow(input).await;
    let first = app.wait_final(failed).await;
    assert_eq!(state(&first), "FAILED", "{first:#}");
    assert_eq!(task(&first, "orders")["state"], "FAILED");
    assert_eq!(task(&first, "fct->fct")["state"], "SKIPPED");
    for done in ["customers", "stg_customers", "counts", "dim"] {
        assert_eq!(task(&first, done)["state"], "COMPLETED", "{done}");
    }
    // A failed flow publishes nothing, but keeps its checkpoints for a retry (and only them).
    let kept = work_dir(&app, failed);
    let mut nodes: Vec<String> = std::fs::read_dir(kept.join("nodes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["customers", "stg_customers"]);
    assert!(!kept.join("spill").exists() && !kept.join("staged").exists());

    // The file appears; the retry reuses customers and stg_customers and runs the rest.
    app.write_file("in/orders.csv", "customer_id,amount\n1,10\n1,5\n3,7\n9,100\n");
    let reply = app
        .post("/flows", &json!({"flow_input_id": input, "retry_of": failed}))
        .await
        .expect(202);
    let retry = reply.id();
    assert_ne!(retry, failed);
    // The reply already shows what is reused.
    assert_eq!(task(&reply.body, "stg_customers")["state"], "COMPLETED");
    assert_eq!(task(&reply.body, "fct")["state"], "PENDING");
    let done = app.wait_final(retry).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    let logs = log_lines(&done);
    assert!(
        logs.iter().any(|l| l.contains(&format!(
            "retry of flow {failed}: reusing 2 node(s) it finished: customers, stg_customers; running the other 7"
        ))),
        "{logs:#?}"
    );
    assert!(!logs.iter().any(|l| l.contains("resuming:")), "{logs:#?}");
    // Reused nodes did not run (no attempt) and keep the rows the failed flow counted; the
    // others ran once.
    for reused in ["customers", "stg_customers"] {
        let t = task(&done, reused);
        assert_eq!(t["state"], "COMPLETED", "{reused}");
        assert_eq!(t["attempts"], 0, "{reused} was not run again");
        assert_eq!(t["rows"], task(&first, reused)["rows"], "{reused}");
    }
    assert_eq!(task(&done, "stg_customers")["rows"], 3);
    for rerun in [
        "orders",
        "fct",
        "counts",
        "dim",
        "dim->dim",
        "counts->counts",
        "fct->fct",
    ] {
        let t = task(&done, rerun);
        assert_eq!(t["state"], "COMPLETED", "{rerun}");
        assert_eq!(t["attempts"], 1, "{rerun}");
    }
    assert_eq!(task(&done, "fct")["rows"], 2);
    let w = app.file("out/w.db");
    assert_eq!(
        sqlite_rows(&w, "SELECT name, total FROM fct ORDER BY name").await,
        vec![vec![json!("ANN"), json!(15)], vec![json!("CY"), json!(7)]]
    );
    assert_eq!(
        sqlite_rows(&w, "SELECT id, name FROM dim ORDER BY id").await,
        vec![
            vec![json!(1), json!("ANN")],
            vec![json!(2), json!("BOB")],
            vec![json!(3), json!("CY")]
        ]
    );
    assert_eq!(
        sqlite_rows(&w, "SELECT n FROM counts").await,
        vec![vec![json!(3)]]
    );
    // The retry completed: its work directory goes, and so do the kept checkpoints of the
    // flow it retried (a later flow of the input completed); retrying that flow again then has
    // nothing to reuse.
    wait_until_gone(&work_dir(&app, retry)).await;
    wait_until_gone(&kept).await;
    let leftovers: Vec<String> = std::fs::read_dir(app.data_dir.join("work"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let again = app
        .post("/flows", &json!({"flow_input_id": input, "retry_of": failed}))
        .await
        .expect(422);
    assert_eq!(again.error_paths(), ["retry_of"]);
    let message = again.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("flow {failed} kept nothing to reuse")),
        "{message}"
    );
    // A COMPLETED flow cannot be retried.
    let completed = app
        .post("/flows", &json!({"flow_input_id": input, "retry_of": retry}))
        .await
        .expect(409);
    let detail = completed.body["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("flow {retry} is COMPLETED")), "{detail}");
}

#[tokio::test]
async fn a_retry_after_a_missing_table_is_created_completes() {
    let app = spawn_app().await;
    let raw = app.file("in/raw.db");
    seed_sqlite(
        &raw,
        "CREATE TABLE customers (id INTEGER, country TEXT);
         INSERT INTO customers VALUES (1, 'fr'), (2, 'de'), (3, 'fr');",
    )
    .await;
    let src = app.sqlite_store("raw", "in/raw.db").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let input = app
        .create_input(json!({
            "name": "tables", "source_store_ids": [src], "target_store_id": db,
            "sources": [
                {"name": "customers", "store_id": src, "table": "customers"},
                {"name": "orders", "store_id": src, "table": "orders"}
            ],
            "transforms": [
                {"name": "by_country", "sql": "SELECT country, count(*) AS n FROM customers GROUP BY country", "materialize": true},
                {"name": "revenue", "sql": "SELECT c.country, sum(o.amount) AS total FROM orders o JOIN customers c ON o.customer_id = c.id GROUP BY c.country"}
            ],
            "outputs": [
                {"node": "by_country", "table": "by_country"},
                {"node": "revenue", "table": "revenue"}
            ]
        }))
        .await;
    let failed = app.start_flow(input).await;
    let first = app.wait_final(failed).await;
    assert_eq!(state(&first), "FAILED", "{first:#}");
    assert_eq!(task(&first, "orders")["state"], "FAILED");
    assert_eq!(task(&first, "by_country")["state"], "COMPLETED");

    seed_sqlite(
        &raw,
        "CREATE TABLE orders (customer_id INTEGER, amount INTEGER);
         INSERT INTO orders VALUES (1, 10), (2, 20), (3, 5);",
    )
    .await;
    let retry = app
        .post("/flows", &json!({"flow_input_id": input, "retry_of": failed}))
        .await
        .expect(202)
        .id();
    let done = app.wait_final(retry).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    let logs = log_lines(&done);
    assert!(
        logs.iter().any(|l| l.contains(&format!(
            "retry of flow {failed}: reusing 2 node(s) it finished: customers, by_country;"
        ))),
        "{logs:#?}"
    );
    for (name, attempts) in [
        ("customers", 0),
        ("by_country", 0),
        ("orders", 1),
        ("revenue", 1),
        ("by_country->by_country", 1),
        ("revenue->revenue", 1),
    ] {
        assert_eq!(task(&done, name)["attempts"], attempts, "{name}");
    }
    let w = app.file("out/w.db");
    assert_eq!(
        sqlite_rows(&w, "SELECT country, n FROM by_country ORDER BY country").await,
        vec![vec![json!("de"), json!(1)], vec![json!("fr"), json!(2)]]
    );
    assert_eq!(
        sqlite_rows(&w, "SELECT country, total FROM revenue ORDER BY country").await,
        vec![vec![json!("de"), json!(20)], vec![json!("fr"), json!(15)]]
    );
}

#[tokio::test]
async fn a_cancelled_flow_can_be_retried_but_not_a_running_one_or_another_inputs() {
    let app = spawn_app().await;
    let rows: String = (1..=40).map(|i| format!("{i}\n")).collect();
    app.write_file("in/n.csv", format!("n\n{rows}"));
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let body = |name: &str| {
        json!({
            "name": name, "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "numbers", "store_id": src, "path": "n.csv"}],
            "transforms": [
                {"name": "kept", "sql": "SELECT n FROM numbers", "materialize": true},
                {"name": "slow", "sql": "SELECT sum(n) AS total FROM kept WHERE sluice_sleep(2000)"}
            ],
            "options": {"max_parallel_tasks": 1}
        })
    };
    let input = app.create_input(body("slow")).await;
    let other = app.create_input(body("other")).await;
    let flow = app.start_flow(input).await;
    app.wait_flow(flow, Duration::from_secs(60), |f| {
        task(f, "slow")["state"] == "RUNNING"
    })
    .await;
    // Still running: not finished, 409.
    let running = app
        .post("/flows", &json!({"flow_input_id": input, "retry_of": flow}))
        .await
        .expect(409);
    assert!(
        running.body["detail"]
            .as_str()
            .unwrap()
            .contains("it has not finished yet"),
        "{:#}",
        running.body
    );
    app.post(&format!("/flows/cancel/{flow}"), &json!({}))
        .await
        .expect(202);
    app.wait_flow(flow, Duration::from_secs(10), |f| state(f) == "CANCELLED")
        .await;
    // Another input's flow: 409, whatever it kept.
    let wrong = app
        .post("/flows", &json!({"flow_input_id": other, "retry_of": flow}))
        .await
        .expect(409);
    assert!(
        wrong.body["detail"].as_str().unwrap().contains(&format!(
            "flow {flow} is a flow of flow input {input}, not of {other}"
        )),
        "{:#}",
        wrong.body
    );
    // A flow that does not exist: 422 on retry_of.
    let missing = app
        .post("/flows", &json!({"flow_input_id": input, "retry_of": 999999}))
        .await
        .expect(422);
    assert_eq!(missing.error_paths(), ["retry_of"]);
    // The cancelled flow's checkpoint is reused.
    let retry = app
        .post("/flows", &json!({"flow_input_id": input, "retry_of": flow}))
        .await
        .expect(202)
        .id();
    let done = app.wait_final(retry).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    assert_eq!(task(&done, "kept")["attempts"], 0);
    assert_eq!(task(&done, "numbers")["attempts"], 0);
    assert_eq!(task(&done, "slow")["attempts"], 1);
    assert_eq!(
        sqlite_rows(&app.file("out/w.db"), "SELECT total FROM slow").await,
        vec![vec![json!(820)]]
    );
}

#[tokio::test]
async fn nothing_to_reuse_is_422() {
    let app = spawn_app().await;
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    // One chain, nothing read twice: nothing is checkpointed.
    let input = app
        .create_input(json!({
            "name": "chain", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "t", "sql": "SELECT * FROM a"}]
        }))
        .await;
    let flow = app.start_flow(input).await;
    assert_eq!(state(&app.wait_final(flow).await), "FAILED");
    wait_until_gone(&work_dir(&app, flow)).await;
    let reply = app
        .post("/flows", &json!({"flow_input_id": input, "retry_of": flow}))
        .await
        .expect(422);
    assert_eq!(reply.error_paths(), ["retry_of"]);
    // A retry_of that is not a positive id is refused like any bad field.
    app.post("/flows", &json!({"flow_input_id": input, "retry_of": "x"}))
        .await
        .expect(400);
}

#[tokio::test]
async fn with_no_retention_a_failed_flow_keeps_nothing() {
    let app = spawn_app_with(AppOptions::default().env("SLUICE__ENGINE__RETRY_RETENTION_H", 0)).await;
    app.write_file("in/customers.csv", "id,name\n1,ann\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let input = app.create_input(shop(src, db)).await;
    let failed = app.start_flow(input).await;
    assert_eq!(state(&app.wait_final(failed).await), "FAILED");
    wait_until_gone(&work_dir(&app, failed)).await;
    app.post("/flows", &json!({"flow_input_id": input, "retry_of": failed}))
        .await
        .expect(422);
}

#[tokio::test]
async fn a_retry_reads_again_the_files_that_changed_since_the_failed_flow_started() {
    let app = spawn_app().await;
    app.write_file("in/a.csv", "k,x\n1,10\n2,20\n");
    app.write_file("in/b.csv", "k,y\n1,100\n2,200\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let input = app
        .create_input(json!({
            "name": "changed", "source_store_ids": [src], "target_store_id": db,
            "sources": [
                {"name": "a", "store_id": src, "path": "a.csv"},
                {"name": "b", "store_id": src, "path": "b.csv"},
                {"name": "c", "store_id": src, "path": "c.csv"}
            ],
            "transforms": [
                {"name": "a2", "sql": "SELECT k, x FROM a", "materialize": true},
                {"name": "b2", "sql": "SELECT k, y FROM b", "materialize": true},
                {"name": "joined", "sql": "SELECT a2.k, x + y + z AS total FROM a2 JOIN b2 ON a2.k = b2.k JOIN c ON c.k = a2.k"}
            ]
        }))
        .await;
    let failed = app.start_flow(input).await;
    let first = app.wait_final(failed).await;
    assert_eq!(state(&first), "FAILED", "{first:#}");
    assert_eq!(task(&first, "b2")["state"], "COMPLETED");
    // b.csv is fixed (a new value), c.csv appears; a.csv stays as it was.
    app.write_file("in/b.csv", "k,y\n1,1000\n2,2000\n");
    app.write_file("in/c.csv", "k,z\n1,1\n2,2\n");
    let retry = app
        .post("/flows", &json!({"flow_input_id": input, "retry_of": failed}))
        .await
        .expect(202)
        .id();
    let done = app.wait_final(retry).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    let logs = log_lines(&done);
    assert!(
        logs.iter().any(|l| l.contains(&format!(
            "retry of flow {failed}: reusing 2 node(s) it finished: a, a2;"
        ))),
        "{logs:#?}"
    );
    assert!(
        logs.iter().any(|l| l.contains(&format!(
            "not reused: b, b2 (read from source(s) whose files changed since flow {failed} started: b)"
        ))),
        "{logs:#?}"
    );
    for (name, attempts) in [("a", 0), ("a2", 0), ("b", 1), ("b2", 1), ("c", 1), ("joined", 1)] {
        assert_eq!(task(&done, name)["attempts"], attempts, "{name}");
    }
    assert_eq!(
        sqlite_rows(&app.file("out/w.db"), "SELECT k, total FROM joined ORDER BY k").await,
        vec![vec![json!(1), json!(1011)], vec![json!(2), json!(2022)]]
    );

    // When every kept checkpoint was computed from changed files, nothing can be reused.
    std::fs::remove_file(app.file("in/c.csv")).unwrap();
    let failing = app.start_flow(input).await;
    assert_eq!(state(&app.wait_final(failing).await), "FAILED");
    app.write_file("in/a.csv", "k,x\n1,11\n2,21\n");
    app.write_file("in/b.csv", "k,y\n1,1001\n2,2001\n");
    let refused = app
        .post("/flows", &json!({"flow_input_id": input, "retry_of": failing}))
        .await
        .expect(422);
    let message = refused.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("every one was computed from source(s) whose files changed since it started (a, b)"),
        "{message}"
    );
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn a_retry_after_a_postgres_table_is_created_publishes_into_postgres() {
    let url = pg_url();
    let pg = PgScratch::new(&url, "sl_retry").await;
    pg.exec(
        "CREATE TABLE customers (id int, country text);
         INSERT INTO customers VALUES (1, 'fr'), (2, 'de'), (3, 'fr');
         CREATE TABLE by_country (country text, n bigint);
         INSERT INTO by_country VALUES ('before', 0);",
    )
    .await;
    let app = spawn_app().await;
    let store = app.postgres_store("pg", &url).await;
    let input = app
        .create_input(json!({
            "name": "pg_retry", "source_store_ids": [store], "target_store_id": store,
            "sources": [
                {"name": "customers", "store_id": store, "table": pg.t("customers")},
                {"name": "orders", "store_id": store, "table": pg.t("orders")}
            ],
            "transforms": [
                {"name": "by_country", "sql": "SELECT country, count(*) AS n FROM customers GROUP BY country", "materialize": true},
                {"name": "revenue", "sql": "SELECT c.country, sum(o.amount) AS total FROM orders o JOIN customers c ON o.customer_id = c.id GROUP BY c.country"}
            ],
            "outputs": [
                {"node": "by_country", "table": pg.t("by_country"), "mode": "replace"},
                {"node": "revenue", "table": pg.t("revenue"), "mode": "replace"}
            ],
            "options": {"max_attempts": 1}
        }))
        .await;
    let failed = app.start_flow(input).await;
    let first = app.wait_final(failed).await;
    assert_eq!(state(&first), "FAILED", "{first:#}");
    assert_eq!(task(&first, "orders")["state"], "FAILED");
    // Nothing was published and nothing is left staged.
    assert_eq!(
        pg.rows("SELECT country, n FROM by_country").await,
        vec![vec![Some("before".to_string()), Some("0".to_string())]]
    );
    assert_eq!(pg.stage_tables().await, Vec::<String>::new());

    pg.exec(
        "CREATE TABLE orders (customer_id int, amount bigint);
         INSERT INTO orders VALUES (1, 10), (2, 20), (3, 5);",
    )
    .await;
    let retry = app
        .post("/flows", &json!({"flow_input_id": input, "retry_of": failed}))
        .await
        .expect(202)
        .id();
    let done = app.wait_final(retry).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    assert_eq!(task(&done, "customers")["attempts"], 0);
    assert_eq!(task(&done, "by_country")["attempts"], 0);
    assert_eq!(task(&done, "orders")["attempts"], 1);
    assert_eq!(task(&done, "revenue")["attempts"], 1);
    let text = |v: &[(&str, &str)]| -> Vec<Vec<Option<String>>> {
        v.iter()
            .map(|(a, b)| vec![Some(a.to_string()), Some(b.to_string())])
            .collect()
    };
    assert_eq!(
        pg.rows("SELECT country, n FROM by_country ORDER BY country")
            .await,
        text(&[("de", "1"), ("fr", "2")])
    );
    assert_eq!(
        pg.rows("SELECT country, total FROM revenue ORDER BY country")
            .await,
        text(&[("de", "20"), ("fr", "15")])
    );
    assert_eq!(pg.stage_tables().await, Vec::<String>::new());
    pg.drop().await;
}
