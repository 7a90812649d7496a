//! What operators and tools see: `/metrics` moving as flows run, the OpenAPI document matching
//! the server's routes, the dashboard served from the binary.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

async fn metrics(app: &TestApp) -> String {
    let resp = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    resp.text().await.expect("body")
}

/// The value of the sample `series` (name with labels, exactly as exposed), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_as_flows_run() {
    let app = spawn_app().await;
    app.write_file("in/a.csv", "x\n1\n2\n3\n4\n5\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let before = metrics(&app).await;
    for state in ["READY", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"] {
        assert_eq!(
            sample(&before, &format!("sluice_flows{{state=\"{state}\"}}")),
            0.0,
            "{before}"
        );
    }
    assert_eq!(
        sample(&before, "sluice_tasks_started_total{kind=\"ingest\"}"),
        0.0
    );
    let ok = app
        .create_input(json!({
            "name": "ok", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "odd", "sql": "SELECT x FROM a WHERE x % 2 = 1"}]
        }))
        .await;
    let bad = app
        .create_input(json!({
            "name": "bad", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "broken", "sql": "SELECT nope FROM a"}]
        }))
        .await;
    let f1 = app.start_flow(ok).await;
    assert_eq!(state(&app.wait_final(f1).await), "COMPLETED");
    let f2 = app.start_flow(bad).await;
    assert_eq!(state(&app.wait_final(f2).await), "FAILED");
    let after = metrics(&app).await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(delta("sluice_flows{state=\"COMPLETED\"}"), 1.0, "{after}");
    assert_eq!(delta("sluice_flows{state=\"FAILED\"}"), 1.0, "{after}");
    assert_eq!(
        delta("sluice_tasks_started_total{kind=\"ingest\"}"),
        2.0,
        "{after}"
    );
    // The failing flow's source is read inside its only reader, whose SQL does not plan: it
    // starts, delivers nothing and stops, so only the good flow's source completes.
    assert_eq!(
        delta("sluice_tasks_completed_total{kind=\"ingest\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta("sluice_tasks_completed_total{kind=\"transform\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta("sluice_tasks_completed_total{kind=\"persist\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta("sluice_tasks_failed_total{kind=\"transform\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta("sluice_task_duration_seconds_count{kind=\"transform\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(delta("sluice_rows_read_total{engine=\"csv\"}"), 5.0, "{after}");
    assert_eq!(
        delta("sluice_rows_written_total{engine=\"sqlite\"}"),
        3.0,
        "{after}"
    );
    assert!(
        sample(&after, "sluice_persister_batch_size_count") >= 1.0,
        "{after}"
    );
    assert!(
        sample(&after, "sluice_persister_write_seconds_count") >= 1.0,
        "{after}"
    );
    assert!(after.contains("sluice_supervisor_restarts_total 0"), "{after}");
    assert_eq!(
        delta("sluice_http_requests_total{method=\"POST\",route=\"/api/v1.0/flows\",status=\"202\"}"),
        2.0,
        "{after}"
    );
    assert!(
        sample(
            &after,
            "sluice_http_requests_total{method=\"GET\",route=\"/api/v1.0/flows/{id}\",status=\"200\"}"
        ) >= 2.0,
        "{after}"
    );
    // Unknown paths are one series, not one per path.
    app.get("/no/such/thing/1").await.expect(404);
    app.get("/no/such/thing/2").await.expect(404);
    let last = metrics(&app).await;
    assert_eq!(
        sample(
            &last,
            "sluice_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"
        ),
        2.0,
        "{last}"
    );
}

/// Every `$ref` in `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap_or_default().to_string());
                }
                refs(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// Fetches the OpenAPI document (with the token, when there is one).
async fn openapi(app: &TestApp, token: Option<&str>) -> Value {
    let mut req = app.client.get(app.api("/openapi.json"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("request");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("JSON")
}

/// Every (method, path) of the document's operations.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .iter()
                .filter(|(m, _)| ["get", "post", "put", "delete", "patch"].contains(&m.as_str()))
                .map(move |(m, op)| (m.to_uppercase(), path.clone(), op))
        })
        .collect()
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_the_server_has() {
    let app = spawn_app().await;
    let doc = openapi(&app, None).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Sluice");
    let documented: BTreeSet<(String, String)> =
        operations(&doc).into_iter().map(|(m, p, _)| (m, p)).collect();
    let served: BTreeSet<(String, String)> = sluice::api::ROUTES
        .iter()
        .map(|(m, p)| (m.to_uppercase(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
    let ids: BTreeSet<&str> = operations(&doc)
        .iter()
        .map(|(m, p, op)| {
            op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{m} {p}: no operationId"))
        })
        .collect();
    assert_eq!(
        ids.len(),
        documented.len(),
        "operationIds are not unique: {ids:?}"
    );

    // Every documented route answers (not the "no such route" 404), and every operation
    // documents its errors as problem+json.
    for (method, path, op) in operations(&doc) {
        let url = format!(
            "{}{}",
            app.address,
            path.replace("{id}", "999").replace("{file}", "app.js")
        );
        let mut req = app.client.request(method.parse().unwrap(), &url);
        if method == "POST" {
            req = req.json(&json!({}));
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            !(status == 404 && body.contains("route ")),
            "{method} {path} is documented but not served: {body}"
        );
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path}: no success response"
        );
        let problem = |code: &str| responses[code]["content"]["application/problem+json"].is_object();
        if path.starts_with("/api/v1.0") {
            assert!(
                problem("500"),
                "{method} {path}: 500 not documented as a problem: {op:#}"
            );
        }
        // Without tokens nothing asks for one, and nothing answers 401.
        assert!(op.get("security").is_none(), "{method} {path}: {op:#}");
        assert!(!responses.contains_key("401"), "{method} {path}: {op:#}");
        if path.contains("{id}") {
            assert!(problem("404"), "{method} {path}: no 404");
            let id = &op["parameters"][0];
            assert_eq!(id["name"], "id");
            assert_eq!(id["schema"]["minimum"], 1, "{method} {path}");
        }
        if op.get("requestBody").is_some() {
            for code in ["400", "413", "422"] {
                assert!(problem(code), "{method} {path}: no {code}");
            }
        }
        let has_query = op["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
        if has_query {
            for code in ["400", "422"] {
                assert!(problem(code), "{method} {path}: no {code}");
            }
            // Lists page with `limit`; `POST /flow-inputs` has `dry_run`.
            let param = |name: &str| {
                op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"] == name)
                    .cloned()
            };
            if method == "GET" {
                let limit = param("limit").expect("limit");
                assert_eq!(limit["schema"]["minimum"], 1);
                assert_eq!(limit["schema"]["maximum"], sluice::api::MAX_LIMIT);
            } else {
                assert_eq!(
                    (method.as_str(), path.as_str()),
                    ("POST", "/api/v1.0/flow-inputs")
                );
                assert!(param("dry_run").is_some(), "{op:#}");
            }
        }
    }
    assert!(
        doc["components"].get("securitySchemes").is_none(),
        "{:#}",
        doc["components"]
    );

    // Every schema reference resolves, and the main shapes are there.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").expect("a schema ref");
        assert!(schemas.contains_key(name), "dangling $ref {r}");
    }
    for name in [
        "FlowView",
        "OutputView",
        "TaskStatus",
        "FlowInputRequest",
        "FlowInputView",
        "NewDataStoreRequest",
        "DataStoreView",
        "Problem",
        "FlowList",
        "StateUpdate",
        "ProgressUpdate",
        "StreamEnd",
        "StoreCheckView",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    assert_eq!(
        schemas["FlowState"]["enum"],
        json!(["READY", "RUNNING", "CANCELLED", "FAILED", "COMPLETED"])
    );
    // The events endpoint describes each event: its name and the schema of its data.
    let event = &doc["paths"]["/api/v1.0/flows/{id}/events"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["schema"];
    assert_eq!(
        event["properties"]["event"]["enum"],
        json!(["snapshot", "state", "progress", "task", "log", "error", "end"])
    );
    assert_eq!(
        event["oneOf"][0]["properties"]["data"]["contentSchema"]["$ref"],
        "#/components/schemas/FlowView"
    );
}

#[tokio::test]
async fn with_tokens_every_api_operation_of_the_document_requires_the_bearer_scheme() {
    let token = "openapi-T0ken-7";
    let app = spawn_app_with(AppOptions::default().env("SLUICE__AUTH__TOKENS", token)).await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, 401, "the document is under the API: {:#}", r.body);
    let doc = openapi(&app, Some(token)).await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer"})
    );
    for (method, path, op) in operations(&doc) {
        if path.starts_with("/api/v1.0") {
            assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path}");
            assert!(
                op["responses"]["401"]["content"]["application/problem+json"].is_object(),
                "{method} {path}: {op:#}"
            );
        } else {
            assert!(op.get("security").is_none(), "{method} {path}: {op:#}");
            assert!(op["responses"].get("401").is_none(), "{method} {path}: {op:#}");
        }
    }
}

#[tokio::test]
async fn the_documents_request_bounds_are_the_servers_settings() {
    let app = spawn_app_with(
        AppOptions::default()
            .env("SLUICE__ENGINE__MEMORY_LIMIT_MB", 640)
            .env("SLUICE__LIMITS__MAX_SOURCES", 7)
            .env("SLUICE__LIMITS__MAX_TRANSFORMS", 9)
            .env("SLUICE__LIMITS__MAX_SQL_LENGTH", 1234),
    )
    .await;
    let doc = openapi(&app, None).await;
    let schemas = &doc["components"]["schemas"];
    let memory = &schemas["OptionsRequest"]["properties"]["memory_limit_mb"];
    assert_eq!(
        (&memory["minimum"], &memory["maximum"]),
        (&json!(16), &json!(640))
    );
    let input = &schemas["FlowInputRequest"]["properties"];
    assert_eq!(input["sources"]["maxItems"], 7);
    assert_eq!(input["transforms"]["maxItems"], 9);
    assert_eq!(schemas["Transform"]["properties"]["sql"]["maxLength"], 1234);
    assert_eq!(
        schemas["NewDataStoreRequest"]["properties"]["engine"]["enum"],
        json!(["postgres", "mysql", "sqlite", "parquet", "csv"]),
        "every engine this server has, and only those"
    );
    // And the server holds to them: one over each bound is a 422 naming the field.
    let store = app
        .create_store(json!({"name": "files", "kind": "file", "engine": "csv",
                             "connection": {"type": "file", "path": app.files.display().to_string()}}))
        .await;
    let too_much = json!({
        "name": "bounds", "source_store_ids": [store], "target_store_id": store,
        "sources": (0..8).map(|i| json!({"name": format!("s{i}"), "store_id": store, "path": "x.csv"})).collect::<Vec<_>>(),
        "transforms": [{"name": "t", "sql": format!("SELECT 1 AS {}", "x".repeat(1230))}],
        "options": {"memory_limit_mb": 641}
    });
    let r = app.post("/flow-inputs", &too_much).await;
    crate::contract::assert_problem(&r, 422);
    for path in ["sources", "transforms[0].sql", "options.memory_limit_mb"] {
        assert!(
            r.error_paths().iter().any(|p| p == path),
            "no error at {path}: {:#}",
            r.body
        );
    }
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary() {
    let app = spawn_app_with(AppOptions::default().env("SLUICE__AUTH__TOKENS", "s3cr3t-token")).await;
    // Open without a token: the pages hold no data (the script asks for the token).
    let page = app
        .client
        .get(format!("{}/", app.address))
        .send()
        .await
        .expect("index");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("/assets/app.js") && html.contains("/assets/app.css"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from elsewhere"
    );
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let resp = app
            .client
            .get(format!("{}/assets/{file}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{file}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with(kind));
        let body = resp.text().await.unwrap();
        assert!(!body.contains("s3cr3t-token"));
        if file != "favicon.svg" {
            assert!(
                !body.contains("https://"),
                "{file} loads something from elsewhere"
            );
        }
    }
    let missing = app
        .client
        .get(format!("{}/assets/nope.js", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // The API behind it still needs the token.
    app.get("/flows").await.expect(401);
}

#[tokio::test]
async fn metrics_count_open_event_streams() {
    let app = spawn_app().await;
    app.write_file("in/a.csv", "x\n1\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let input = app
        .create_input(json!({
            "name": "slow", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "s", "sql": "SELECT count(*) AS n FROM range(300000) r1 CROSS JOIN range(300000) r2"}]
        }))
        .await;
    let flow = app.start_flow(input).await;
    let stream = crate::events::Stream::open(&app, flow).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sample(&metrics(&app).await, "sluice_event_followers") != 1.0 {
        assert!(std::time::Instant::now() < deadline, "follower not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(stream);
    app.post(&format!("/flows/cancel/{flow}"), &json!({}))
        .await
        .expect(202);
    app.wait_final(flow).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sample(&metrics(&app).await, "sluice_event_followers") != 0.0 {
        assert!(std::time::Instant::now() < deadline, "follower not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
