//! Surviving crashes: kill -9 mid-workload, SIGTERM, panics in task work and in a flow actor's
//! own logic, internal failures (damaged metadata, an unusable work directory). Each flow fails
//! (or recovers) alone; nothing is left RUNNING, nothing is written twice; internal causes go to
//! the service log, never into a flow's public lines.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::process::ServerProcess;

const ROWS: i64 = 40_000;

fn numbers_csv() -> String {
    let mut s = String::from("n\n");
    for i in 1..=ROWS {
        s.push_str(&format!("{i}\n"));
    }
    s
}

/// A flow of two slow nodes (about a second each) that appends to `appended_{k}` and replaces
/// `copy_{k}`, and a source streamed straight (no checkpoint) into `direct_{k}` with `append`.
fn slow_flow(k: usize, src: i64, db: i64) -> Value {
    json!({
        "name": format!("slow{k}"), "source_store_ids": [src], "target_store_id": db,
        "sources": [
            {"name": "numbers", "store_id": src, "path": "n.csv"},
            {"name": "direct", "store_id": src, "path": "n.csv"}
        ],
        "transforms": [
            {"name": "slow1", "sql": "SELECT n FROM numbers WHERE sluice_sleep(150)"},
            {"name": "slow2", "sql": format!("SELECT n * {k} AS m FROM slow1 WHERE sluice_sleep(150)")}
        ],
        "outputs": [
            {"node": "slow2", "table": format!("appended_{k}"), "mode": "append"},
            {"node": "slow1", "table": format!("copy_{k}"), "mode": "replace"},
            {"node": "direct", "table": format!("direct_{k}"), "mode": "append"}
        ],
        "options": {"max_parallel_tasks": 2}
    })
}

async fn create_stores(api: &Api) -> (i64, i64) {
    let src = api
        .create_store(json!({"name": "raw", "kind": "file", "engine": "csv", "connection": {"type": "file", "path": api.files.join("in")}}))
        .await;
    let db = api
        .create_store(json!({"name": "w", "kind": "relational_db", "engine": "sqlite", "connection": {"type": "file", "path": api.files.join("out/w.db")}}))
        .await;
    (src, db)
}

async fn check_results(api: &Api, k: usize) {
    let sum: i64 = (1..=ROWS).sum();
    let db = api.files.join("out/w.db");
    let appended = sqlite_rows(&db, &format!("SELECT count(*), sum(m) FROM appended_{k}")).await;
    assert_eq!(
        appended,
        vec![vec![json!(ROWS), json!(sum * k as i64)]],
        "appended_{k}: exactly one copy"
    );
    let copy = sqlite_rows(&db, &format!("SELECT count(*), sum(n) FROM copy_{k}")).await;
    assert_eq!(copy, vec![vec![json!(ROWS), json!(sum)]], "copy_{k}");
    let direct = sqlite_rows(&db, &format!("SELECT count(*), sum(n) FROM direct_{k}")).await;
    assert_eq!(
        direct,
        vec![vec![json!(ROWS), json!(sum)]],
        "direct_{k}: exactly one copy"
    );
}

#[tokio::test]
async fn kill_9_mid_workload_then_restart_completes_every_flow_exactly_once() {
    let temp = tempfile::tempdir().unwrap();
    let (data, files, log) = (
        temp.path().join("data"),
        temp.path().join("files"),
        temp.path().join("server.log"),
    );
    std::fs::create_dir_all(files.join("in")).unwrap();
    std::fs::write(files.join("in/n.csv"), numbers_csv()).unwrap();

    let mut server = ServerProcess::start(&data, &files, &log, &[]).await;
    let (src, db) = create_stores(&server).await;
    let mut flows = Vec::new();
    for k in 1..=3 {
        let input = server.create_input(slow_flow(k, src, db)).await;
        if k == 1 {
            // What resumes from a checkpoint and what is recomputed: slow1 is read twice
            // (materialized), numbers and slow2 are inlined into their one reader, direct
            // streams into its output.
            let planned = server
                .get(&format!("/flow-inputs/{input}"))
                .await
                .expect(200)
                .body;
            let materialized = |name: &str| {
                planned["dag"]["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|n| n["name"] == name)
                    .unwrap()["materialize"]
                    .clone()
            };
            assert_eq!(materialized("slow1"), true);
            for inlined in ["numbers", "slow2", "direct"] {
                assert_eq!(materialized(inlined), false, "{inlined}");
            }
        }
        flows.push((k, server.start_flow(input).await));
    }
    // Kill once some work is checkpointed and some is still running (inlined nodes too).
    server
        .wait_flow(flows[0].1, Duration::from_secs(120), |f| {
            task(f, "slow1")["state"] == "COMPLETED"
        })
        .await;
    let before: Vec<String> = {
        let mut v = Vec::new();
        for (_, id) in &flows {
            v.push(state(&server.flow(*id).await).to_string());
        }
        v
    };
    assert!(
        before.iter().any(|s| s == "RUNNING"),
        "the kill must land mid-workload: {before:?}"
    );
    server.kill9();

    let server = ServerProcess::start(&data, &files, &log, &[]).await;
    for (k, id) in &flows {
        let done = server.wait_final(*id).await;
        assert_eq!(state(&done), "COMPLETED", "flow {id}: {done:#}");
        check_results(&server, *k).await;
    }
    let running = server.get("/flows?state=RUNNING").await.expect(200).body;
    assert_eq!(running["items"].as_array().unwrap().len(), 0);
    // The interrupted flows say so, and kept their finished nodes.
    let first = server.flow(flows[0].1).await;
    let logs = first["output"]["logs"]["lines"].to_string();
    assert!(logs.contains("resumed after restart"), "{logs}");
    assert!(
        logs.contains("completed node(s) kept from the previous run"),
        "{logs}"
    );
    assert_eq!(
        task(&first, "slow1")["attempts"],
        1,
        "a checkpointed node is not run again"
    );
    assert_eq!(
        task(&first, "direct")["attempts"],
        1,
        "a source already staged into its output is not read again"
    );
    assert!(server.log_text().contains("flow resumed after restart"));
    // Nothing of the first process's work is left behind.
    for (_, id) in &flows {
        wait_until_gone(&data.join(format!("work/flow-{id}"))).await;
    }
}

#[tokio::test]
async fn sigterm_parks_running_flows_and_the_next_start_resumes_them() {
    let temp = tempfile::tempdir().unwrap();
    let (data, files, log) = (
        temp.path().join("data"),
        temp.path().join("files"),
        temp.path().join("server.log"),
    );
    std::fs::create_dir_all(files.join("in")).unwrap();
    std::fs::write(files.join("in/n.csv"), numbers_csv()).unwrap();

    let mut server = ServerProcess::start(
        &data,
        &files,
        &log,
        &[("SLUICE__SERVER__SHUTDOWN_TIMEOUT_S", "5")],
    )
    .await;
    let (src, db) = create_stores(&server).await;
    let mut flows = Vec::new();
    for k in 1..=2 {
        let input = server.create_input(slow_flow(k, src, db)).await;
        flows.push((k, server.start_flow(input).await));
    }
    server
        .wait_flow(flows[0].1, Duration::from_secs(120), |f| state(f) == "RUNNING")
        .await;
    let asked = std::time::Instant::now();
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "graceful exit: {status:?}");
    assert!(
        asked.elapsed() <= Duration::from_secs(6),
        "exit took {:?}",
        asked.elapsed()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("parking running flows"), "{text}");

    let server = ServerProcess::start(&data, &files, &log, &[]).await;
    for (k, id) in &flows {
        let done = server.wait_final(*id).await;
        assert_eq!(state(&done), "COMPLETED", "{done:#}");
        check_results(&server, *k).await;
    }
    let first = server.flow(flows[0].1).await;
    let lines = first["output"]["logs"]["lines"].to_string();
    assert!(
        lines.contains("suspended for shutdown"),
        "{lines}\n{}",
        server.log_text()
    );
}

#[tokio::test]
async fn a_panicking_node_is_restarted_then_failed_while_other_flows_complete() {
    let temp = tempfile::tempdir().unwrap();
    let (data, files, log) = (
        temp.path().join("data"),
        temp.path().join("files"),
        temp.path().join("server.log"),
    );
    std::fs::create_dir_all(files.join("in")).unwrap();
    std::fs::write(files.join("in/n.csv"), numbers_csv()).unwrap();
    let server = ServerProcess::start(&data, &files, &log, &[("SLUICE__ENGINE__MAX_RESTARTS", "2")]).await;
    let (src, db) = create_stores(&server).await;

    let good = server
        .create_input(json!({
            "name": "good", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "numbers", "store_id": src, "path": "n.csv"}],
            "transforms": [{"name": "total", "sql": "SELECT sum(n) AS s FROM numbers WHERE sluice_sleep(50)"}]
        }))
        .await;
    let bad = server
        .create_input(json!({
            "name": "bad", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "numbers", "store_id": src, "path": "n.csv"}],
            "transforms": [{"name": "boom", "sql": "SELECT n FROM numbers WHERE sluice_panic('kaboom in task work')"}]
        }))
        .await;
    let mut goods = Vec::new();
    for _ in 0..5 {
        goods.push(server.start_flow(good).await);
    }
    let bad_flow = server.start_flow(bad).await;
    let done = server.wait_final(bad_flow).await;
    assert_eq!(state(&done), "FAILED", "{done:#}");
    assert_eq!(done["output"]["restarts"], 2);
    let errors = done["output"]["errors"]["lines"].to_string();
    assert!(
        errors.contains("kaboom in task work") && errors.contains("gave up after 2 restart(s)"),
        "{errors}"
    );
    let logs = done["output"]["logs"]["lines"].to_string();
    assert!(
        logs.contains("restart 1 of 2") && logs.contains("restart 2 of 2"),
        "{logs}"
    );
    for id in goods {
        assert_eq!(state(&server.wait_final(id).await), "COMPLETED");
    }
    server.get("/flows").await.expect(200);
    let text = server.log_text();
    let warns: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("WARN") && l.contains("flow crashed") && l.contains(&format!("flow_id={bad_flow}"))
        })
        .collect();
    assert!(
        warns.len() >= 2,
        "WARN lines with the flow id, attempt and cause:\n{text}"
    );
    assert!(
        warns.iter().all(|l| l.contains("kaboom in task work")),
        "{warns:?}"
    );
    assert!(
        warns
            .iter()
            .filter(|l| l.contains("restarting"))
            .all(|l| l.contains("attempt=")),
        "{warns:?}"
    );
}

#[tokio::test]
async fn a_panic_in_a_flow_actor_is_contained_and_supervised() {
    let app = spawn_app_with(AppOptions::default().env("SLUICE__ENGINE__MAX_RESTARTS", "1")).await;
    app.write_file("in/a.csv", "x\n1\n2\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    // The panicking node is read by nothing, so it keeps no result: every restart runs it
    // (and panics) again, until the supervisor gives up. (Work an earlier run finished — a
    // checkpoint, a staged output — is reused by a restart instead.)
    let bad = app
        .create_input(json!({
            "name": "actor-panic", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "fault_actor_panic_1", "sql": "SELECT x FROM a"}],
            "outputs": [{"node": "a", "table": "a_copy"}]
        }))
        .await;
    let good = app
        .create_input(json!({
            "name": "fine", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "total", "sql": "SELECT sum(x) AS s FROM a"}]
        }))
        .await;
    let bad_flow = app.start_flow(bad).await;
    let good_flow = app.start_flow(good).await;
    let done = app.wait_final(bad_flow).await;
    assert_eq!(state(&done), "FAILED", "{done:#}");
    assert!(
        done["output"]["errors"]["lines"].to_string().contains("panicked"),
        "{done:#}"
    );
    assert_eq!(done["output"]["restarts"], 1);
    assert_eq!(state(&app.wait_final(good_flow).await), "COMPLETED");
    // The service goes on: new flows run.
    let again = app.start_flow(good).await;
    assert_eq!(state(&app.wait_final(again).await), "COMPLETED");
}

/// Lines of the service log that mention `flow_id` at `level`.
fn log_lines_of(text: &str, level: &str, flow_id: i64) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains(level) && l.contains(&format!("flow_id={flow_id}")))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_flow_whose_stored_input_is_damaged_fails_with_a_safe_sentence_and_the_log_has_the_cause() {
    let temp = tempfile::tempdir().unwrap();
    let (data, files, log) = (
        temp.path().join("data"),
        temp.path().join("files"),
        temp.path().join("server.log"),
    );
    std::fs::create_dir_all(files.join("in")).unwrap();
    std::fs::write(files.join("in/n.csv"), numbers_csv()).unwrap();
    // One slot, held by a slow flow (400 batches of 100 rows, 200 ms each, on 2 partitions:
    // about 40 s) until it is cancelled: the second flow waits READY meanwhile.
    let server = ServerProcess::start(
        &data,
        &files,
        &log,
        &[
            ("SLUICE__ENGINE__MAX_RUNNING_FLOWS", "1"),
            ("SLUICE__ENGINE__BATCH_SIZE", "100"),
        ],
    )
    .await;
    let (src, db) = create_stores(&server).await;
    let slow = server
        .create_input(json!({
            "name": "holds-the-slot", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "numbers", "store_id": src, "path": "n.csv"}],
            "transforms": [{"name": "slow", "sql": "SELECT n FROM numbers WHERE sluice_sleep(200)"}]
        }))
        .await;
    let damaged = server
        .create_input(json!({
            "name": "damaged", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "numbers", "store_id": src, "path": "n.csv"}],
            "transforms": [{"name": "total", "sql": "SELECT sum(n) AS s FROM numbers"}]
        }))
        .await;
    let slow_flow = server.start_flow(slow).await;
    let flow = server.start_flow(damaged).await;
    assert_eq!(state(&server.flow(flow).await), "READY");
    metadata_exec(
        &data,
        &format!("UPDATE flow_input SET sources = '\"not a list\"' WHERE id = {damaged}"),
    )
    .await;
    server
        .post(&format!("/flows/cancel/{slow_flow}"), &json!({}))
        .await
        .expect(202);

    let done = server.wait_final(flow).await;
    assert_eq!(state(&done), "FAILED", "{done:#}");
    let errors = done["output"]["errors"]["lines"].to_string();
    assert!(
        errors.contains(&format!(
            "cannot start: an internal error occurred (see the service log, flow {flow})"
        )),
        "{errors}"
    );
    for internal in ["unreadable", "invalid type", "not a list", "internal error:"] {
        assert!(
            !errors.contains(internal),
            "{internal:?} in the flow's errors: {errors}"
        );
    }
    let logs = done["output"]["logs"]["lines"].to_string();
    assert!(!logs.contains("unreadable"), "{logs}");
    // The service log has the whole cause, with the flow id.
    let text = server.log_text();
    let lines = log_lines_of(&text, "ERROR", flow);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cannot load flow") && l.contains("stored sources is unreadable")),
        "{text}"
    );
}

#[tokio::test]
async fn a_flow_that_crashes_on_an_internal_failure_says_where_to_look_and_the_log_has_the_cause() {
    let temp = tempfile::tempdir().unwrap();
    let (data, files, log) = (
        temp.path().join("data"),
        temp.path().join("files"),
        temp.path().join("server.log"),
    );
    std::fs::create_dir_all(files.join("in")).unwrap();
    std::fs::write(files.join("in/a.csv"), "x\n1\n2\n").unwrap();
    let server = ServerProcess::start(&data, &files, &log, &[("SLUICE__ENGINE__MAX_RESTARTS", "1")]).await;
    let (src, db) = create_stores(&server).await;
    let input = server
        .create_input(json!({
            "name": "no-work-dir", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "total", "sql": "SELECT sum(x) AS s FROM a"}]
        }))
        .await;
    // Flows keep their work under data/work: make that a file, so no flow can set up.
    let work = data.join("work");
    std::fs::remove_dir_all(&work).unwrap();
    std::fs::write(&work, "not a directory").unwrap();

    let flow = server.start_flow(input).await;
    let done = server.wait_final(flow).await;
    assert_eq!(state(&done), "FAILED", "{done:#}");
    assert_eq!(done["output"]["restarts"], 1, "{done:#}");
    let errors = done["output"]["errors"]["lines"].to_string();
    assert!(
        errors.contains(&format!(
            "crashed: an internal error occurred (see the service log, flow {flow}); gave up after 1 restart(s)"
        )),
        "{errors}"
    );
    let logs = done["output"]["logs"]["lines"].to_string();
    let data_dir = data.display().to_string();
    for text in [&errors, &logs] {
        for internal in ["Not a directory", "os error", data_dir.as_str()] {
            assert!(
                !text.contains(internal),
                "{internal:?} in the flow's lines: {text}"
            );
        }
    }
    let text = server.log_text();
    let crashes = log_lines_of(&text, "WARN", flow);
    assert!(
        crashes
            .iter()
            .any(|l| l.contains("flow crashed") && l.contains("Not a directory")),
        "{text}"
    );
}
