//! The `sluice` client commands against a real server: create stores and inputs from files,
//! start and follow flows (exit codes 0 COMPLETED, 1 FAILED, 2 CANCELLED), list, get, cancel.

use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Command;

use crate::helpers::*;

fn sluice(app: &TestApp, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args)
        .env("SLUICE_URL", &app.address)
        .env_remove("SLUICE_TOKEN")
        .kill_on_drop(true);
    cmd
}

async fn run(app: &TestApp, args: &[&str]) -> Output {
    let out = tokio::time::timeout(Duration::from_secs(120), sluice(app, args).output())
        .await
        .unwrap_or_else(|_| panic!("sluice {args:?} did not finish"))
        .expect("run sluice");
    out
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

/// Creates a CSV source store and a SQLite target through the CLI; returns their ids.
async fn stores(app: &TestApp) -> (i64, i64) {
    app.write_file("in/orders.csv", "id,amount\n1,10\n2,20\n3,30\n");
    std::fs::create_dir_all(app.file("out")).unwrap();
    let raw = app.write_file(
        "specs/raw.json",
        json!({"name": "raw", "kind": "file", "engine": "csv",
               "connection": {"type": "file", "path": app.file("in")}})
        .to_string(),
    );
    let out = run(app, &["--json", "stores", "create", raw.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let src = json_of(&out)["id"].as_i64().unwrap();
    let target = app.write_file(
        "specs/w.json",
        json!({"name": "w", "kind": "relational_db", "engine": "sqlite",
               "connection": {"type": "file", "path": app.file("out/w.db")}})
        .to_string(),
    );
    let out = run(app, &["stores", "create", target.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("created data store "), "{stdout}");
    let db = stdout
        .trim_start_matches("created data store ")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (src, db)
}

async fn input(app: &TestApp, name: &str, src: i64, db: i64, sql: &str) -> i64 {
    let file = app.write_file(
        &format!("specs/{name}.json"),
        json!({"name": name, "source_store_ids": [src], "target_store_id": db,
               "sources": [{"name": "orders", "store_id": src, "path": "orders.csv"}],
               "transforms": [{"name": "t", "sql": sql}]})
        .to_string(),
    );
    let out = run(app, &["--json", "inputs", "create", file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    json_of(&out)["id"].as_i64().unwrap()
}

#[tokio::test]
async fn follow_exits_0_for_completed_and_1_for_failed() {
    let app = spawn_app().await;
    let (src, db) = stores(&app).await;
    let ok = input(&app, "ok", src, db, "SELECT sum(amount) AS total FROM orders").await;
    let out = run(&app, &["flows", "start", &ok.to_string(), "--follow"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("INFO [t] completed: 1 rows"), "{}", text(&out));
    assert!(stdout.contains(" COMPLETED in "), "{}", text(&out));
    assert_eq!(
        sqlite_rows(&app.file("out/w.db"), "SELECT total FROM t").await,
        vec![vec![json!(60)]]
    );

    let bad = input(&app, "bad", src, db, "SELECT nope FROM orders").await;
    let out = run(&app, &["flows", "start", &bad.to_string(), "--follow"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ERROR [t]") && stdout.contains("nope"),
        "{}",
        text(&out)
    );

    // Following flows that already ended gives the same codes at once; JSON lines with --json.
    let page = run(&app, &["--json", "flows", "list", "--state", "failed"]).await;
    assert_eq!(page.status.code(), Some(0), "{}", text(&page));
    let items = json_of(&page)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    let failed = items[0]["id"].as_i64().unwrap();
    // The plain list is a table: every row's columns line up under the header's.
    let out = run(&app, &["flows", "list"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = table.lines().collect();
    let state_at = lines[0].find("STATE").unwrap();
    assert!(lines.len() >= 3, "{table}");
    for row in &lines[1..] {
        let state = &row[state_at..];
        assert!(
            state.starts_with("COMPLETED") || state.starts_with("FAILED"),
            "columns do not line up:\n{table}"
        );
    }
    let out = run(&app, &["--json", "flows", "follow", &failed.to_string()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(events.first().unwrap()["event"], "snapshot");
    assert_eq!(events.last().unwrap()["event"], "end");
    assert_eq!(events.last().unwrap()["data"]["state"], "FAILED");
    let completed = failed - 1;
    let out = run(
        &app,
        &["flows", "follow", &completed.to_string(), &failed.to_string()],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = run(&app, &["flows", "follow", &completed.to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = run(&app, &["flows", "get", &failed.to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAILED"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn follow_exits_2_when_the_flow_is_cancelled() {
    let app = spawn_app().await;
    let (src, db) = stores(&app).await;
    let slow = input(
        &app,
        "slow",
        src,
        db,
        "SELECT count(*) AS n FROM range(300000) r1 CROSS JOIN range(300000) r2",
    )
    .await;
    let flow = app.start_flow(slow).await;
    let follower = sluice(&app, &["flows", "follow", &flow.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn follow");
    app.wait_flow(flow, Duration::from_secs(30), |f| {
        task(f, "t")["state"] == "RUNNING"
    })
    .await;
    let out = run(&app, &["flows", "cancel", &flow.to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancel sent to flow"));
    let out = tokio::time::timeout(Duration::from_secs(30), follower.wait_with_output())
        .await
        .expect("follow ends after the cancel")
        .expect("follow output");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("cancel requested") && stdout.contains("CANCELLED"),
        "{}",
        text(&out)
    );

    // Cancelling again is a 409: exit 3 with the problem's detail.
    let out = run(&app, &["flows", "cancel", &flow.to_string()]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("409"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn errors_are_readable_and_tokens_are_sent() {
    let app = spawn_app_with(AppOptions::default().env("SLUICE__AUTH__TOKENS", "cli-t0ken")).await;
    // Without the token: 401, exit 3, and the token is never printed.
    let out = run(&app, &["flows", "list"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        text(&out)
    );
    let out = run(&app, &["--token", "wrong", "flows", "get", "1"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let mut cmd = sluice(&app, &["flows", "get", "1"]);
    cmd.env("SLUICE_TOKEN", "cli-t0ken");
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("cli-t0ken"));
    // A 422 lists every problem with its path.
    let spec = app.write_file(
        "specs/bad.json",
        json!({"name": "9bad", "kind": "file", "engine": "nope", "connection": {"type": "file", "path": "/"}})
            .to_string(),
    );
    let mut cmd = sluice(&app, &["stores", "create", spec.to_str().unwrap()]);
    cmd.env("SLUICE_TOKEN", "cli-t0ken");
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("422") && stderr.contains("\n  name: ") && stderr.contains("\n  engine: "),
        "{stderr}"
    );
    // A server that is not there.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--url", "http://127.0.0.1:9", "flows", "list"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    // A usage error is not mistaken for a flow's outcome.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["flows", "follow"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
}
