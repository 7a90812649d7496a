//! Cancellation: READY flows at once; RUNNING flows within a second, mid-query and mid-load,
//! leaving targets as they were and no work directory behind.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

/// Cancels `flow` once `ready` holds, and returns how long CANCELLED took to appear.
async fn cancel_when(app: &TestApp, flow: i64, ready: impl Fn(&serde_json::Value) -> bool) -> Duration {
    app.wait_flow(flow, Duration::from_secs(60), ready).await;
    let sent = Instant::now();
    app.post(&format!("/flows/cancel/{flow}"), &json!({}))
        .await
        .expect(202);
    app.wait_flow(flow, Duration::from_secs(10), |f| state(f) == "CANCELLED")
        .await;
    sent.elapsed()
}

#[tokio::test]
async fn cancelling_a_long_query_stops_it_within_a_second_and_keeps_the_target() {
    let app = spawn_app().await;
    app.write_file("in/a.csv", "x\n1\n2\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    // The target holds an earlier result that must survive.
    let seed = app
        .create_input(json!({
            "name": "seed", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "heavy", "sql": "SELECT sum(x) AS total FROM a"}]
        }))
        .await;
    let f = app.start_flow(seed).await;
    assert_eq!(state(&app.wait_final(f).await), "COMPLETED");
    let input = app
        .create_input(json!({
            "name": "heavy", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "heavy", "sql": "SELECT sum(r1.value * r2.value) AS total FROM range(200000) r1 CROSS JOIN range(200000) r2 CROSS JOIN a"}]
        }))
        .await;
    let flow = app.start_flow(input).await;
    let took = cancel_when(&app, flow, |f| task(f, "heavy")["state"] == "RUNNING").await;
    assert!(took <= Duration::from_secs(1), "cancel took {took:?}");
    let done = app.flow(flow).await;
    assert_eq!(task(&done, "heavy")["state"], "CANCELLED");
    assert_eq!(task(&done, "heavy->heavy")["state"], "CANCELLED");
    assert!(done["output"]["progress"]["percent"].as_f64().unwrap() < 100.0);
    assert_eq!(
        sqlite_rows(&app.file("out/w.db"), "SELECT total FROM heavy").await,
        vec![vec![json!(3)]]
    );
    wait_until_gone(&app.data_dir.join(format!("work/flow-{flow}"))).await;
    // A cancelled flow cannot be cancelled again.
    app.post(&format!("/flows/cancel/{flow}"), &json!({}))
        .await
        .expect(409);
}

/// A join that emits its rows without ever waiting for input (a cross join of generated
/// ranges) keeps every engine thread inside one poll; DataFusion's own yield points sit only
/// at its leaves and exchanges. The cancel must still end it well inside the task's time, and
/// the threads must be free afterwards: the next flow runs at once.
#[tokio::test]
async fn cancelling_a_query_deep_inside_a_join_that_never_waits_stops_it() {
    // Two engine threads and two partitions whatever the machine: both are taken by the join.
    let app = spawn_app_with(AppOptions::default().env("SLUICE__ENGINE__THREADS", "2")).await;
    app.write_file("in/a.csv", "x\n1\n2\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let heavy = app
        .create_input(json!({
            "name": "heavy", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "heavy", "sql": "SELECT sum(r1.value * r2.value) AS total FROM range(300000) r1 CROSS JOIN range(300000) r2"}]
        }))
        .await;
    let flow = app.start_flow(heavy).await;
    // Well into the join: its rows are being summed.
    app.wait_flow(flow, Duration::from_secs(60), |f| {
        task(f, "heavy")["state"] == "RUNNING"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let took = cancel_when(&app, flow, |_| true).await;
    assert!(took <= Duration::from_millis(1500), "cancel took {took:?}");
    assert_eq!(task(&app.flow(flow).await, "heavy")["state"], "CANCELLED");
    // The join's threads are free: a small flow completes at once.
    let small = app
        .create_input(json!({
            "name": "small", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "small", "sql": "SELECT sum(x) AS total FROM a"}]
        }))
        .await;
    let next = app.start_flow(small).await;
    let done = app
        .wait_flow(next, Duration::from_secs(30), |f| is_final(state(f)))
        .await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    wait_until_gone(&app.data_dir.join(format!("work/flow-{flow}"))).await;
}

#[tokio::test]
async fn cancelling_a_large_load_rolls_it_back() {
    let app = spawn_app().await;
    app.write_file("in/a.csv", "x\n1\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let seed = app
        .create_input(json!({
            "name": "seed", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "big", "sql": "SELECT x AS value FROM a"}]
        }))
        .await;
    let f = app.start_flow(seed).await;
    assert_eq!(state(&app.wait_final(f).await), "COMPLETED");
    let input = app
        .create_input(json!({
            "name": "load", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "big", "sql": "SELECT value FROM range(5000000) CROSS JOIN a"}]
        }))
        .await;
    let flow = app.start_flow(input).await;
    // Cancel while the persist node is writing rows into SQLite.
    let took = cancel_when(&app, flow, |f| {
        let t = task(f, "big->big");
        t["state"] == "RUNNING" && t["rows"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert!(took <= Duration::from_secs(1), "cancel took {took:?}");
    assert_eq!(
        sqlite_rows(&app.file("out/w.db"), "SELECT value FROM big").await,
        vec![vec![json!(1)]]
    );
    let tables = sqlite_rows(
        &app.file("out/w.db"),
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
    )
    .await;
    assert_eq!(tables, vec![vec![json!("big")]], "no staging table may remain");
    wait_until_gone(&app.data_dir.join(format!("work/flow-{flow}"))).await;
}

#[tokio::test]
async fn cancelling_a_waiting_flow_is_immediate() {
    let app = spawn_app_with(AppOptions::default().env("SLUICE__ENGINE__MAX_RUNNING_FLOWS", "1")).await;
    app.write_file("in/a.csv", "x\n1\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let slow = app
        .create_input(json!({
            "name": "slow", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "s", "sql": "SELECT count(*) AS n FROM range(300000) r1 CROSS JOIN range(300000) r2"}]
        }))
        .await;
    let running = app.start_flow(slow).await;
    app.wait_flow(running, Duration::from_secs(30), |f| state(f) == "RUNNING")
        .await;
    let waiting = app.start_flow(slow).await;
    assert_eq!(state(&app.flow(waiting).await), "READY");
    let reply = app
        .post(&format!("/flows/cancel/{waiting}"), &json!({}))
        .await
        .expect(202);
    assert_eq!(reply.body["output"]["state"], "CANCELLED");
    assert_eq!(state(&app.flow(waiting).await), "CANCELLED");
    app.post(&format!("/flows/cancel/{running}"), &json!({}))
        .await
        .expect(202);
    app.wait_flow(running, Duration::from_secs(5), |f| state(f) == "CANCELLED")
        .await;
    // Unknown ids are 404; ids that are not numbers too.
    app.post("/flows/cancel/999999", &json!({})).await.expect(404);
    app.post("/flows/cancel/abc", &json!({})).await.expect(404);
}
