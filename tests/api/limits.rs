//! Task and flow timeouts end in FAILED with a message naming the limit.

use serde_json::json;

use crate::helpers::*;

const HEAVY: &str = "SELECT count(*) AS n FROM range(300000) r1 CROSS JOIN range(300000) r2";

async fn setup(app: &TestApp) -> (i64, i64) {
    app.write_file("in/a.csv", "x\n1\n");
    (
        app.csv_store("raw", "in").await,
        app.sqlite_store("w", "out/w.db").await,
    )
}

#[tokio::test]
async fn a_task_over_its_timeout_fails_saying_so() {
    let app = spawn_app().await;
    let (src, db) = setup(&app).await;
    let input = app
        .create_input(json!({
            "name": "slow-task", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "heavy", "sql": HEAVY}],
            "options": {"task_timeout_s": 1}
        }))
        .await;
    let flow = app.start_flow(input).await;
    let done = app.wait_final(flow).await;
    assert_eq!(state(&done), "FAILED");
    assert_eq!(
        task(&done, "heavy")["error"],
        "timed out after 1 s (options.task_timeout_s)"
    );
    let errors = done["output"]["errors"]["lines"].to_string();
    assert!(
        errors.contains("[heavy] timed out after 1 s (options.task_timeout_s)"),
        "{done:#}"
    );
}

#[tokio::test]
async fn a_flow_over_its_timeout_fails_saying_so() {
    let app = spawn_app().await;
    let (src, db) = setup(&app).await;
    let input = app
        .create_input(json!({
            "name": "slow-flow", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "heavy", "sql": HEAVY}],
            "options": {"flow_timeout_s": 1, "task_timeout_s": 3600}
        }))
        .await;
    let flow = app.start_flow(input).await;
    let started = std::time::Instant::now();
    let done = app.wait_final(flow).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(state(&done), "FAILED");
    let errors = done["output"]["errors"]["lines"].to_string();
    assert!(
        errors.contains("[flow] timed out after 1 s (options.flow_timeout_s)"),
        "{errors}"
    );
    assert_eq!(task(&done, "heavy")["state"], "CANCELLED");
}
