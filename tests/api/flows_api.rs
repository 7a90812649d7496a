//! `/flows`: starting (202 + Location) with the READY picture, reading, listing with the state
//! filter and paging, cancelling (202 / 409 / 404), and the error paths of `POST /flows`.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::contract::*;
use crate::helpers::*;

/// A tiny flow input: three rows in, one sum out (or, with `fail`, a source file that is
/// missing, so the ingest fails on its only attempt).
async fn tiny_input(app: &TestApp, name: &str, fail: bool) -> i64 {
    app.write_file("in/a.csv", "x\n1\n2\n3\n");
    let existing: Vec<Value> = app.get("/data-stores?limit=500").await.body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let find = |n: &str| {
        existing
            .iter()
            .find(|s| s["name"] == n)
            .map(|s| s["id"].as_i64().unwrap())
    };
    let src = match find("raw") {
        Some(id) => id,
        None => app.csv_store("raw", "in").await,
    };
    let db = match find("w") {
        Some(id) => id,
        None => app.sqlite_store("w", "out/w.db").await,
    };
    app.create_input(json!({
        "name": name, "source_store_ids": [src], "target_store_id": db,
        "sources": [{"name": "a", "store_id": src, "path": if fail { "missing.csv" } else { "a.csv" }}],
        "transforms": [{"name": "total", "sql": "SELECT sum(x) AS total FROM a"}],
        "options": {"max_attempts": 1}
    }))
    .await
}

const OUTPUT_KEYS: [&str; 10] = [
    "id",
    "created_utc",
    "updated_utc",
    "state",
    "progress",
    "logs",
    "errors",
    "tasks",
    "started_utc",
    "finished_utc",
];

/// Checks the full flow shape of API.md; returns the output.
#[track_caller]
fn assert_flow_shape(flow: &Value, id: i64, input: i64) -> &Value {
    assert_keys(
        flow,
        &["id", "created_utc", "flow_input_id", "flow_output_id", "output"],
    );
    assert_eq!(flow["id"], id);
    assert_eq!(flow["flow_input_id"], input);
    assert_timestamp(&flow["created_utc"]);
    let output = &flow["output"];
    let keys: BTreeSet<&str> = output.as_object().unwrap().keys().map(String::as_str).collect();
    for key in OUTPUT_KEYS {
        assert!(keys.contains(key), "output lacks {key}: {output:#}");
    }
    // Anything beyond the contract is an addition, never a replacement.
    for extra in keys.iter().filter(|k| !OUTPUT_KEYS.contains(k)) {
        assert_eq!(*extra, "restarts", "unexpected output field: {output:#}");
        assert!(output["restarts"].is_u64());
    }
    assert_eq!(output["id"], flow["flow_output_id"]);
    assert!(output["id"].is_i64());
    assert_timestamp(&output["created_utc"]);
    assert_timestamp(&output["updated_utc"]);
    let state = output["state"].as_str().expect("state");
    assert!(
        ["READY", "RUNNING", "CANCELLED", "FAILED", "COMPLETED"].contains(&state),
        "{state}"
    );
    assert_keys(&output["progress"], &["percent", "updated_utc"]);
    let percent = output["progress"]["percent"]
        .as_f64()
        .expect("percent is a number");
    assert!((0.0..=100.0).contains(&percent));
    assert_timestamp(&output["progress"]["updated_utc"]);
    for lines in ["logs", "errors"] {
        let l = &output[lines];
        let keys: BTreeSet<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(keys.contains("lines") && keys.contains("updated_utc"), "{l:#}");
        assert_timestamp(&l["updated_utc"]);
        for line in l["lines"].as_array().expect("lines") {
            let line = line.as_str().expect("a line is a string");
            let (ts, rest) = line.split_once(' ').expect("timestamp first");
            assert_timestamp(&json!(ts));
            assert!(
                ["INFO ", "WARN ", "ERROR "]
                    .iter()
                    .any(|lvl| rest.starts_with(lvl)),
                "level after the timestamp: {line}"
            );
            assert!(!line.contains('\n'), "one event a line: {line:?}");
        }
    }
    for task in output["tasks"].as_array().expect("tasks") {
        assert_keys(
            task,
            &[
                "name",
                "kind",
                "state",
                "attempts",
                "rows",
                "started_utc",
                "finished_utc",
                "error",
            ],
        );
        assert!(task["name"].is_string());
        assert!(["ingest", "transform", "persist"].contains(&task["kind"].as_str().unwrap()));
        assert!([
            "PENDING",
            "RUNNING",
            "COMPLETED",
            "FAILED",
            "SKIPPED",
            "CANCELLED"
        ]
        .contains(&task["state"].as_str().unwrap()));
        assert!(task["attempts"].is_u64());
        assert!(task["rows"].is_null() || task["rows"].is_u64(), "{task}");
        for ts in ["started_utc", "finished_utc"] {
            if !task[ts].is_null() {
                assert_timestamp(&task[ts]);
            }
        }
        assert!(task["error"].is_null() || task["error"].is_string());
    }
    for ts in ["started_utc", "finished_utc"] {
        if !output[ts].is_null() {
            assert_timestamp(&output[ts]);
        }
    }
    output
}

#[tokio::test]
async fn starting_a_flow_is_202_with_location_and_the_ready_picture() {
    let app = spawn_app().await;
    let input = tiny_input(&app, "tiny", false).await;
    let dag = app.get(&format!("/flow-inputs/{input}")).await.expect(200).body["dag"].clone();
    let created = app
        .post("/flows", &json!({"flow_input_id": input}))
        .await
        .expect(202);
    let id = created.id();
    assert_eq!(header(&created, "location"), format!("/api/v1.0/flows/{id}"));
    assert!(header(&created, "content-type").starts_with("application/json"));
    let output = assert_flow_shape(&created.body, id, input);
    assert_eq!(output["state"], "READY");
    assert_eq!(output["progress"]["percent"], json!(0.0));
    assert_eq!(output["logs"]["lines"], json!([]));
    assert_eq!(output["errors"]["lines"], json!([]));
    assert!(output["started_utc"].is_null() && output["finished_utc"].is_null());
    // One PENDING task per DAG node, in the DAG's order.
    let tasks = output["tasks"].as_array().unwrap();
    let names: Vec<&Value> = tasks.iter().map(|t| &t["name"]).collect();
    assert_eq!(names, dag["order"].as_array().unwrap().iter().collect::<Vec<_>>());
    for (task, node) in tasks.iter().zip(dag["order"].as_array().unwrap()) {
        let kind = dag["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == *node)
            .unwrap()["kind"]
            .clone();
        assert_eq!(
            *task,
            json!({"name": node, "kind": kind, "state": "PENDING", "attempts": 0, "rows": null,
                   "started_utc": null, "finished_utc": null, "error": null})
        );
    }

    // Followed to the end: the same flow, COMPLETED, with its times, rows and logs.
    let done = app.wait_final(id).await;
    let out = assert_flow_shape(&done, id, input);
    for stable in ["id", "created_utc", "flow_input_id", "flow_output_id"] {
        assert_eq!(done[stable], created.body[stable], "{stable}");
    }
    assert_eq!(out["created_utc"], created.body["output"]["created_utc"]);
    assert_eq!(out["state"], "COMPLETED", "{done:#}");
    assert_eq!(out["progress"]["percent"], json!(100.0));
    assert_eq!(out["errors"]["lines"], json!([]));
    assert!(!out["logs"]["lines"].as_array().unwrap().is_empty());
    let started = out["started_utc"].as_str().expect("started");
    let finished = out["finished_utc"].as_str().expect("finished");
    assert!(started <= finished && out["created_utc"].as_str().unwrap() <= started);
    for task in out["tasks"].as_array().unwrap() {
        assert_eq!(task["state"], "COMPLETED", "{task}");
        assert_eq!(task["attempts"], 1, "{task}");
        assert!(
            task["started_utc"].is_string() && task["finished_utc"].is_string(),
            "{task}"
        );
        assert!(task["error"].is_null());
    }
    assert_eq!(task(&done, "a")["rows"], 3);
    assert_eq!(task(&done, "total")["rows"], 1);
    // The Location leads to the same flow.
    let location = header(&created, "location").to_string();
    let via_location = send(
        &app,
        Method::GET,
        &format!("{}{location}", app.address),
        None,
        None,
    )
    .await
    .expect(200);
    assert_eq!(via_location.body["id"], id);
}

#[tokio::test]
async fn a_failed_flow_shows_its_errors_in_the_same_shape() {
    let app = spawn_app().await;
    let input = tiny_input(&app, "broken", true).await;
    let id = app.start_flow(input).await;
    let done = app.wait_final(id).await;
    let out = assert_flow_shape(&done, id, input);
    assert_eq!(out["state"], "FAILED", "{done:#}");
    assert!(out["progress"]["percent"].as_f64().unwrap() < 100.0);
    let errors = out["errors"]["lines"].as_array().unwrap();
    assert!(!errors.is_empty());
    assert!(
        errors.iter().any(|l| l.as_str().unwrap().contains("[a]")),
        "{errors:?}"
    );
    assert_eq!(task(&done, "a")["state"], "FAILED");
    assert!(
        task(&done, "a")["error"]
            .as_str()
            .unwrap()
            .contains("missing.csv"),
        "{done:#}"
    );
    assert_eq!(task(&done, "total")["state"], "SKIPPED");
}

#[tokio::test]
async fn post_flows_error_paths() {
    let app = spawn_app().await;
    // A flow input that does not exist: 422 naming the field.
    let r = app.post("/flows", &json!({"flow_input_id": 4242})).await;
    assert_invalid(&r, &["flow_input_id"]);
    assert_message(&r, "flow_input_id", &["flow input 4242 does not exist"]);
    // A whole number is an integer however it is written (as JSON Schema counts it).
    for value in [json!(4242.0), json!(4.242e3)] {
        let r = app.post("/flows", &json!({"flow_input_id": value})).await;
        assert_invalid(&r, &["flow_input_id"]);
        assert_message(&r, "flow_input_id", &["flow input 4242 does not exist"]);
    }
    // Wrong types: 400 naming the field.
    for value in [json!("1"), json!(1.5), json!(null), json!([1]), json!(-1.5)] {
        let r = app.post("/flows", &json!({"flow_input_id": value})).await;
        assert_problem(&r, 400);
        assert_eq!(r.error_paths(), ["flow_input_id"], "{value}: {:#}", r.body);
    }
    let r = app.post("/flows", &json!({})).await;
    assert_problem(&r, 400);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("missing field `flow_input_id`"),
        "{:#}",
        r.body
    );
    let r = app
        .post("/flows", &json!({"flow_input_id": 1, "priority": 5}))
        .await;
    assert_problem(&r, 400);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `priority`"),
        "{:#}",
        r.body
    );
    let r = app.post("/flows", &json!({"flow_inpt_id": 1})).await;
    assert_problem(&r, 400);
    for text in ["", "{", "{\"flow_input_id\": 1,}", "1"] {
        let r = post_text(&app, "/flows", text).await;
        assert_problem(&r, 400);
    }
    let r = post_text(&app, "/flows", "{\n\"flow_input_id\": 1,}").await;
    assert!(
        r.body["detail"].as_str().unwrap().contains("line 2, column"),
        "{:#}",
        r.body
    );
    let r = send(
        &app,
        Method::POST,
        &app.api("/flows"),
        Some("text/plain"),
        Some(b"{\"flow_input_id\": 1}".to_vec()),
    )
    .await;
    assert_problem(&r, 400);
    // None of it started a flow.
    assert_eq!(
        app.get("/flows").await.expect(200).body,
        json!({"items": [], "next_before_id": null})
    );
}

#[tokio::test]
async fn unknown_flows_are_404_on_get_and_cancel() {
    let app = spawn_app().await;
    for path in [
        "/flows/1",
        "/flows/987654",
        "/flows/abc",
        "/flows/-3",
        "/flows/1x",
    ] {
        assert_problem(&app.get(path).await, 404);
    }
    for id in ["1", "987654", "abc", "0"] {
        let r = app.post(&format!("/flows/cancel/{id}"), &json!({})).await;
        assert_problem(&r, 404);
        let r = send(
            &app,
            Method::POST,
            &app.api(&format!("/flows/cancel/{id}")),
            None,
            None,
        )
        .await;
        assert_problem(&r, 404);
    }
    let r = app.get("/flows/987654").await;
    assert!(
        r.body["detail"].as_str().unwrap().contains("flow 987654"),
        "{:#}",
        r.body
    );
}

#[tokio::test]
async fn cancelling_a_finished_flow_is_a_409_and_changes_nothing() {
    let app = spawn_app().await;
    let ok = app.start_flow(tiny_input(&app, "ok", false).await).await;
    let bad = app.start_flow(tiny_input(&app, "bad", true).await).await;
    for (id, final_state) in [(ok, "COMPLETED"), (bad, "FAILED")] {
        let before = app.wait_final(id).await;
        assert_eq!(state(&before), final_state);
        let r = app.post(&format!("/flows/cancel/{id}"), &json!({})).await;
        assert_problem(&r, 409);
        let detail = r.body["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("flow {id}")) && detail.contains(final_state),
            "{detail}"
        );
        // Without a body too.
        let r = send(
            &app,
            Method::POST,
            &app.api(&format!("/flows/cancel/{id}")),
            None,
            None,
        )
        .await;
        assert_problem(&r, 409);
        assert_eq!(app.flow(id).await, before);
    }
}

#[tokio::test]
async fn cancelling_a_ready_flow_answers_202_with_the_cancelled_flow() {
    // One slot: a long flow holds it, so the second flow stays READY.
    let app = spawn_app_with(AppOptions::default().env("SLUICE__ENGINE__MAX_RUNNING_FLOWS", 1)).await;
    app.write_file("in/a.csv", "x\n1\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let long = app
        .create_input(json!({
            "name": "long", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "heavy", "sql": "SELECT sum(r1.value * r2.value) AS total FROM range(200000) r1 CROSS JOIN range(200000) r2 CROSS JOIN a"}]
        }))
        .await;
    let running = app.start_flow(long).await;
    app.wait_flow(running, std::time::Duration::from_secs(60), |f| {
        state(f) == "RUNNING"
    })
    .await;
    let waiting = app.start_flow(long).await;
    assert_eq!(state(&app.flow(waiting).await), "READY");

    let r = app
        .post(&format!("/flows/cancel/{waiting}"), &json!({}))
        .await
        .expect(202);
    assert!(header(&r, "content-type").starts_with("application/json"));
    let out = assert_flow_shape(&r.body, waiting, long);
    assert_eq!(out["state"], "CANCELLED", "{:#}", r.body);
    assert!(out["finished_utc"].is_string(), "{:#}", r.body);
    for t in out["tasks"].as_array().unwrap() {
        assert!(
            t["state"] == "CANCELLED" || t["state"] == "PENDING" || t["state"] == "SKIPPED",
            "{t}"
        );
        assert_eq!(t["attempts"], 0);
    }
    assert_eq!(state(&app.flow(waiting).await), "CANCELLED");
    // Cancelling it again: 409.
    assert_problem(
        &app.post(&format!("/flows/cancel/{waiting}"), &json!({})).await,
        409,
    );

    // The running one: 202 at once, CANCELLED soon after.
    let r = app
        .post(&format!("/flows/cancel/{running}"), &json!({}))
        .await
        .expect(202);
    assert_flow_shape(&r.body, running, long);
    let done = app
        .wait_flow(running, std::time::Duration::from_secs(10), |f| {
            state(f) == "CANCELLED"
        })
        .await;
    assert_flow_shape(&done, running, long);
}

#[tokio::test]
async fn lists_filter_by_state_and_page_newest_first() {
    let app = spawn_app().await;
    let good = tiny_input(&app, "good", false).await;
    let bad = tiny_input(&app, "bad", true).await;
    let mut completed = Vec::new();
    let mut failed = Vec::new();
    let mut all = Vec::new();
    for i in 0..7 {
        let failing = i % 3 == 1;
        let id = app.start_flow(if failing { bad } else { good }).await;
        all.push(id);
        if failing {
            failed.push(id)
        } else {
            completed.push(id)
        }
    }
    for id in &all {
        app.wait_final(*id).await;
    }
    all.reverse();
    completed.reverse();
    failed.reverse();

    let list = app.get("/flows").await.expect(200);
    assert_keys(&list.body, &["items", "next_before_id"]);
    assert_eq!(ids(&list.body), all);
    assert!(list.body["next_before_id"].is_null());
    // Items are summaries: no logs, no tasks; consistent with the full flow.
    for item in list.body["items"].as_array().unwrap() {
        assert_keys(
            item,
            &["id", "created_utc", "flow_input_id", "flow_output_id", "output"],
        );
        assert_keys(
            &item["output"],
            &[
                "id",
                "updated_utc",
                "state",
                "progress",
                "task_count",
                "error_count",
                "started_utc",
                "finished_utc",
            ],
        );
        let full = app.flow(item["id"].as_i64().unwrap()).await;
        for key in ["id", "created_utc", "flow_input_id", "flow_output_id"] {
            assert_eq!(item[key], full[key]);
        }
        for key in [
            "id",
            "updated_utc",
            "state",
            "progress",
            "started_utc",
            "finished_utc",
        ] {
            assert_eq!(item["output"][key], full["output"][key], "{key}");
        }
        assert_eq!(
            item["output"]["task_count"],
            full["output"]["tasks"].as_array().unwrap().len()
        );
        assert_eq!(
            item["output"]["error_count"],
            full["output"]["errors"]["lines"].as_array().unwrap().len()
        );
        assert_timestamp(&item["created_utc"]);
        assert_timestamp(&item["output"]["updated_utc"]);
    }

    // The state filter, alone and with paging.
    for (state, expected) in [
        ("COMPLETED", &completed),
        ("FAILED", &failed),
        ("RUNNING", &vec![]),
        ("READY", &vec![]),
        ("CANCELLED", &vec![]),
    ] {
        let r = app.get(&format!("/flows?state={state}")).await.expect(200);
        assert_eq!(ids(&r.body), *expected, "{state}");
        for item in r.body["items"].as_array().unwrap() {
            assert_eq!(item["output"]["state"], state);
        }
        for limit in [1, 2, 3] {
            assert_eq!(
                walk(&app, "/flows", &format!("&state={state}"), limit).await,
                *expected
            );
        }
    }
    for limit in [1, 3, 6, 7, 500] {
        assert_eq!(walk(&app, "/flows", "", limit).await, all, "limit {limit}");
    }

    for bad_state in ["DONE", "running!", "1"] {
        let r = app.get(&format!("/flows?state={bad_state}")).await;
        assert_invalid(&r, &["state"]);
        assert_message(&r, "state", &["READY, RUNNING, CANCELLED, FAILED or COMPLETED"]);
    }
    for bad in ["0", "501"] {
        assert_invalid(&app.get(&format!("/flows?limit={bad}")).await, &["limit"]);
    }
    assert_invalid(&app.get("/flows?limit=0&state=COMPLETED").await, &["limit"]);
    // Both problems at once.
    assert_invalid(&app.get("/flows?state=DONE&limit=501").await, &["state", "limit"]);
    for bad in ["limit=abc", "before_id=z", "status=COMPLETED", "limit=1&limit=2"] {
        assert_problem(&app.get(&format!("/flows?{bad}")).await, 400);
    }
}
