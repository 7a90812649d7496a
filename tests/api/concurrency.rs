//! Many flows at once: admission up to `max_running_flows`, first in first out, all correct.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn fifty_flows_with_four_slots_all_complete_correctly() {
    let app = spawn_app_with(AppOptions::default().env("SLUICE__ENGINE__MAX_RUNNING_FLOWS", "4")).await;
    let mut csv = String::from("n\n");
    for i in 1..=2000 {
        csv.push_str(&format!("{i}\n"));
    }
    app.write_file("in/n.csv", csv);
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let mut flows = Vec::new();
    for k in 0..50 {
        let input = app
            .create_input(json!({
                "name": format!("f{k}"), "source_store_ids": [src], "target_store_id": db,
                "sources": [{"name": "n", "store_id": src, "path": "n.csv"}],
                "transforms": [{"name": "s", "sql": format!("SELECT {k} AS k, sum(n * {k}) AS total, count(*) AS c FROM n")}],
                "outputs": [{"node": "s", "table": format!("result_{k}")}]
            }))
            .await;
        flows.push((k, input));
    }
    let mut ids = Vec::new();
    for (k, input) in &flows {
        ids.push((*k, app.start_flow(*input).await));
    }
    let mut max_running = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let running = app.get("/flows?state=RUNNING&limit=500").await.expect(200).body["items"]
            .as_array()
            .unwrap()
            .len();
        max_running = max_running.max(running);
        assert!(running <= 4, "{running} flows RUNNING with 4 slots");
        let done = app.get("/flows?state=COMPLETED&limit=500").await.expect(200).body["items"]
            .as_array()
            .unwrap()
            .len();
        if done == 50 {
            break;
        }
        let failed = app.get("/flows?state=FAILED&limit=500").await.body["items"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(failed, 0, "a flow failed");
        assert!(std::time::Instant::now() < deadline, "flows did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        max_running >= 2,
        "flows should have run in parallel (max seen {max_running})"
    );
    let sum: i64 = (1..=2000).sum();
    for (k, _) in &ids {
        let rows = sqlite_rows(
            &app.file("out/w.db"),
            &format!("SELECT k, total, c FROM result_{k}"),
        )
        .await;
        assert_eq!(
            rows,
            vec![vec![json!(k), json!(sum * k), json!(2000)]],
            "flow {k}"
        );
    }
    // First in, first out: flows started in order.
    let mut starts = Vec::new();
    for (_, id) in &ids {
        let f = app.flow(*id).await;
        starts.push(f["output"]["started_utc"].as_str().unwrap().to_string());
    }
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted, "flows must start in the order they were created");
}

/// SQLite has one writer per database: a flow whose query runs long must not keep the write
/// lock from the start of its output, or every other flow writing into that database waits
/// for it (and fails once SQLite's busy timeout, 30 s, passes).
#[tokio::test]
async fn a_long_query_into_a_sqlite_database_does_not_hold_up_other_flows_writing_there() {
    let app = spawn_app().await;
    app.write_file("in/a.csv", "x\n1\n2\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let long = app
        .create_input(json!({
            "name": "long", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "long", "sql": "SELECT count(*) AS n FROM range(300000) r1 CROSS JOIN range(300000) r2"}],
            "outputs": [{"node": "long", "table": "long"}]
        }))
        .await;
    let quick = app
        .create_input(json!({
            "name": "quick", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "outputs": [{"node": "a", "table": "quick"}]
        }))
        .await;
    let running = app.start_flow(long).await;
    app.wait_flow(running, Duration::from_secs(60), |f| {
        task(f, "long")["state"] == "RUNNING"
    })
    .await;
    // Its output is open by now: the query runs inside it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let next = app.start_flow(quick).await;
    // Well inside SQLite's busy timeout: a lock held by the long flow would keep it waiting.
    let done = app
        .wait_flow(next, Duration::from_secs(20), |f| is_final(state(f)))
        .await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    assert_eq!(
        sqlite_rows(&app.file("out/w.db"), "SELECT x FROM quick ORDER BY x").await,
        vec![vec![json!(1)], vec![json!(2)]]
    );
    assert_eq!(state(&app.flow(running).await), "RUNNING");
    app.post(&format!("/flows/cancel/{running}"), &json!({}))
        .await
        .expect(202);
    app.wait_flow(running, Duration::from_secs(10), |f| state(f) == "CANCELLED")
        .await;
}
