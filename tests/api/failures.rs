//! Node failures: the failed node is FAILED with its cause, dependents SKIPPED, independent
//! branches complete, the flow is FAILED and lists every error.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_bad_column_fails_its_branch_only() {
    let app = spawn_app().await;
    app.write_file("in/orders.csv", "id,amount\n1,10\n2,20\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    seed_sqlite(
        &app.file("out/w.db"),
        "CREATE TABLE fine (total INTEGER); INSERT INTO fine VALUES (-1)",
    )
    .await;
    let input = app
        .create_input(json!({
            "name": "branches", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "orders", "store_id": src, "path": "orders.csv"}],
            "transforms": [
                {"name": "broken", "sql": "SELECT id,\n  amout FROM orders"},
                {"name": "after_broken", "sql": "SELECT count(*) AS n FROM broken"},
                {"name": "fine", "sql": "SELECT sum(amount) AS total FROM orders"}
            ]
        }))
        .await;
    let flow = app.start_flow(input).await;
    let done = app.wait_final(flow).await;
    assert_eq!(state(&done), "FAILED");
    assert_eq!(task(&done, "broken")["state"], "FAILED");
    assert_eq!(task(&done, "after_broken")["state"], "SKIPPED");
    assert_eq!(task(&done, "after_broken->after_broken")["state"], "SKIPPED");
    assert_eq!(task(&done, "fine")["state"], "COMPLETED");
    assert_eq!(task(&done, "fine->fine")["state"], "COMPLETED");
    let error = task(&done, "broken")["error"].as_str().unwrap();
    assert!(
        error.contains("line 2, column 3") && error.contains("amout") && error.contains("amount"),
        "{error}"
    );
    let errors = done["output"]["errors"]["lines"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .contains("ERROR [broken] SQL error at line 2, column 3"),
        "{errors:?}"
    );
    // The independent branch ran, but a failed flow publishes nothing: the target keeps its
    // earlier table and no staging is left behind.
    let tables = sqlite_rows(
        &app.file("out/w.db"),
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
    )
    .await;
    assert_eq!(tables, vec![vec![json!("fine")]]);
    assert_eq!(
        sqlite_rows(&app.file("out/w.db"), "SELECT total FROM fine").await,
        vec![vec![json!(-1)]]
    );
    assert!(done["output"]["progress"]["percent"].as_f64().unwrap() < 100.0);
}

#[tokio::test]
async fn unreadable_and_ragged_files_name_the_file_and_line() {
    let app = spawn_app().await;
    app.write_file("in/ragged.csv", "id,name\n1,a\n2,b,extra\n3,c\n");
    app.write_file("in/broken.parquet", "this is not parquet");
    let src = app.csv_store("raw", "in").await;
    let pq = app
        .create_store(json!({"name": "pq", "kind": "file", "engine": "parquet", "connection": {"type": "file", "path": app.file("in")}}))
        .await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let input = app
        .create_input(json!({
            "name": "bad-files", "source_store_ids": [src, pq], "target_store_id": db,
            "sources": [
                {"name": "missing", "store_id": src, "path": "nope/*.csv"},
                {"name": "ragged", "store_id": src, "path": "ragged.csv"},
                {"name": "corrupt", "store_id": pq, "path": "broken.parquet"}
            ],
            "outputs": [{"node": "missing"}, {"node": "ragged"}, {"node": "corrupt"}]
        }))
        .await;
    let flow = app.start_flow(input).await;
    let done = app.wait_final(flow).await;
    assert_eq!(state(&done), "FAILED");
    let missing = task(&done, "missing")["error"].as_str().unwrap().to_string();
    assert!(missing.contains("no file matches \"nope/*.csv\""), "{missing}");
    let ragged = task(&done, "ragged")["error"].as_str().unwrap().to_string();
    assert!(
        ragged.contains("ragged.csv line 3") && ragged.contains("expected 2") && ragged.contains("found 3"),
        "{ragged}"
    );
    let corrupt = task(&done, "corrupt")["error"].as_str().unwrap().to_string();
    assert!(!corrupt.is_empty());
    assert_eq!(done["output"]["errors"]["lines"].as_array().unwrap().len(), 3);
    // The failed loads left no table behind.
    let db = app.file("out/w.db");
    assert!(
        !db.exists()
            || sqlite_rows(&db, "SELECT name FROM sqlite_master WHERE type = 'table'")
                .await
                .is_empty()
    );
}

#[tokio::test]
async fn fail_fast_stops_the_other_branches() {
    let app = spawn_app().await;
    app.write_file("in/a.csv", "x\n1\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let input = app
        .create_input(json!({
            "name": "ff", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [
                {"name": "bad", "sql": "SELECT nope FROM a"},
                {"name": "slow", "sql": "SELECT count(*) AS n FROM range(100000000) r1 CROSS JOIN a"}
            ],
            "options": {"fail_fast": true}
        }))
        .await;
    let flow = app.start_flow(input).await;
    let done = app.wait_final(flow).await;
    assert_eq!(state(&done), "FAILED");
    assert_eq!(task(&done, "bad")["state"], "FAILED");
    let slow = task(&done, "slow")["state"].as_str().unwrap().to_string();
    assert!(
        slow == "CANCELLED" || slow == "PENDING" || slow == "SKIPPED",
        "{slow}"
    );
}

#[tokio::test]
async fn a_flow_publishes_all_its_outputs_at_once_or_none() {
    let app = spawn_app().await;
    app.write_file("in/a.csv", "x\n1\n2\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let lake = app.parquet_store("lake", "lake").await;
    seed_sqlite(
        &app.file("out/w.db"),
        "CREATE TABLE one (x INTEGER); INSERT INTO one VALUES (0); CREATE TABLE two (x INTEGER)",
    )
    .await;
    let input = |name: &str, target: i64, second: &str| {
        json!({
            "name": name, "source_store_ids": [src], "target_store_id": target,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [
                {"name": "one", "sql": "SELECT x FROM a"},
                {"name": "two", "sql": second}
            ],
            "outputs": [{"node": "one", "mode": "append"}, {"node": "two"}]
        })
    };
    // `two` fails at run time (a cast error) after `one` has been staged.
    let failing = app
        .create_input(input("failing", db, "SELECT CAST('x' AS INT) AS x FROM a"))
        .await;
    let f = app.start_flow(failing).await;
    let done = app.wait_final(f).await;
    assert_eq!(state(&done), "FAILED");
    assert_eq!(task(&done, "one->one")["state"], "COMPLETED");
    let w = app.file("out/w.db");
    assert_eq!(
        sqlite_rows(&w, "SELECT x FROM one").await,
        vec![vec![json!(0)]],
        "nothing appended"
    );
    let tables = sqlite_rows(
        &w,
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
    )
    .await;
    assert_eq!(
        tables,
        vec![vec![json!("one")], vec![json!("two")]],
        "no staging left"
    );
    // The same shape that succeeds publishes both, in one transaction.
    let ok = app
        .create_input(input("ok", db, "SELECT x * 10 AS x FROM a"))
        .await;
    let f = app.start_flow(ok).await;
    let done = app.wait_final(f).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    assert!(done["output"]["logs"]["lines"]
        .to_string()
        .contains("published 2 output(s) to w"));
    assert_eq!(
        sqlite_rows(&w, "SELECT x FROM one ORDER BY x").await,
        vec![vec![json!(0)], vec![json!(1)], vec![json!(2)]]
    );
    assert_eq!(
        sqlite_rows(&w, "SELECT x FROM two ORDER BY x").await,
        vec![vec![json!(10)], vec![json!(20)]]
    );
    // File targets too: a failed flow leaves no dataset and no staging directory.
    let failing = app
        .create_input(input("failing-lake", lake, "SELECT CAST('x' AS INT) AS x FROM a"))
        .await;
    let f = app.start_flow(failing).await;
    assert_eq!(state(&app.wait_final(f).await), "FAILED");
    let left: Vec<String> = std::fs::read_dir(app.file("lake"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
