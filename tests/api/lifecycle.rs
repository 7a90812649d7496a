//! A flow from start to end: files in, SQL transforms, results out; progress; restarts.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// 1000 rows: id, grp (id % 7), amount (id * 1.5), with a few empty amounts.
fn numbers_csv() -> String {
    let mut s = String::from("id,grp,amount\n");
    for i in 1..=1000 {
        if i % 100 == 0 {
            s.push_str(&format!("{i},{},\n", i % 7));
        } else {
            s.push_str(&format!("{i},{},{}\n", i % 7, i as f64 * 1.5));
        }
    }
    s
}

#[tokio::test]
async fn a_flow_runs_csv_through_transforms_into_sqlite_and_parquet() {
    let app = spawn_app().await;
    app.write_file("in/numbers.csv", numbers_csv());
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("warehouse", "out/w.db").await;
    let input = app
        .create_input(json!({
            "name": "numbers",
            "source_store_ids": [src],
            "target_store_id": db,
            "sources": [{"name": "numbers", "store_id": src, "path": "numbers.csv"}],
            "transforms": [
                {"name": "clean", "sql": "SELECT id, grp, coalesce(amount, 0) AS amount FROM numbers"},
                {"name": "by_grp", "sql": "SELECT grp, count(*) AS n, sum(amount) AS total FROM clean GROUP BY grp"},
                {"name": "top", "sql": "WITH r AS (SELECT id, grp, amount, row_number() OVER (PARTITION BY grp ORDER BY amount DESC) AS rn FROM clean) SELECT grp, id FROM r WHERE rn = 1"}
            ]
        }))
        .await;
    let flow = app.start_flow(input).await;
    let done = app.wait_final(flow).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    assert_eq!(done["output"]["progress"]["percent"], 100.0);
    assert_eq!(task(&done, "numbers")["rows"], 1000);
    assert_eq!(task(&done, "by_grp")["rows"], 7);

    let by_grp = sqlite_rows(
        &app.file("out/w.db"),
        "SELECT grp, n, total FROM by_grp ORDER BY grp",
    )
    .await;
    // Expected values computed independently of the engine.
    for (g, row) in by_grp.iter().enumerate() {
        let ids: Vec<i64> = (1..=1000).filter(|i| i % 7 == g as i64).collect();
        let total: f64 = ids
            .iter()
            .filter(|i| *i % 100 != 0)
            .map(|i| *i as f64 * 1.5)
            .sum();
        assert_eq!(row[0], json!(g as i64));
        assert_eq!(row[1], json!(ids.len() as i64));
        assert_eq!(row[2].as_f64().unwrap(), total, "group {g}");
    }
    let top = sqlite_rows(&app.file("out/w.db"), "SELECT grp, id FROM top ORDER BY grp").await;
    let expect_top: Vec<i64> = (0..7)
        .map(|g| (1..=1000).filter(|i| i % 7 == g && i % 100 != 0).max().unwrap())
        .collect();
    assert_eq!(
        top.iter().map(|r| r[1].as_i64().unwrap()).collect::<Vec<_>>(),
        expect_top
    );

    // Logs: one event a line, timestamp, level, task.
    let logs: Vec<&str> = done["output"]["logs"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let line = logs
        .iter()
        .find(|l| l.contains("[by_grp] completed"))
        .expect("a completion line");
    assert!(
        line.ends_with("completed: 7 rows in ") || line.contains(" INFO [by_grp] completed: 7 rows in "),
        "{line}"
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(line.split(' ').next().unwrap()).is_ok(),
        "{line}"
    );
    // The work directory is gone once the flow ended.
    wait_until_gone(&app.data_dir.join(format!("work/flow-{flow}"))).await;
}

#[tokio::test]
async fn outputs_can_target_parquet_datasets_and_csv_files_with_append() {
    let app = spawn_app().await;
    app.write_file("in/a.csv", "k,v\n1,x\n2,y\n");
    let src = app.csv_store("raw", "in").await;
    let lake = app.parquet_store("lake", "lake").await;
    let csv_out = app.csv_store("csv_out", "csv_out").await;
    let to_lake = app
        .create_input(json!({
            "name": "to-lake", "source_store_ids": [src], "target_store_id": lake,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "t", "sql": "SELECT k * 10 AS k, upper(v) AS v FROM a"}],
            "outputs": [{"node": "t", "table": "facts", "mode": "append"}, {"node": "a", "table": "raw_copy"}]
        }))
        .await;
    for _ in 0..2 {
        let f = app.start_flow(to_lake).await;
        assert_eq!(state(&app.wait_final(f).await), "COMPLETED");
    }
    // Two appends: four rows; the replaced copy: two.
    let rows = parquet_rows(&app.file("lake/facts"), "SELECT k, v FROM t ORDER BY k, v").await;
    assert_eq!(
        rows,
        vec![
            json!({"k": 10, "v": "X"}),
            json!({"k": 10, "v": "X"}),
            json!({"k": 20, "v": "Y"}),
            json!({"k": 20, "v": "Y"})
        ]
    );
    let rows = parquet_rows(&app.file("lake/raw_copy"), "SELECT count(*) AS n FROM t").await;
    assert_eq!(rows, vec![json!({"n": 2})]);

    let to_csv = app
        .create_input(json!({
            "name": "to-csv", "source_store_ids": [src], "target_store_id": csv_out,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "outputs": [{"node": "a", "table": "copy", "mode": "append"}]
        }))
        .await;
    for _ in 0..2 {
        let f = app.start_flow(to_csv).await;
        assert_eq!(state(&app.wait_final(f).await), "COMPLETED");
    }
    assert_eq!(
        std::fs::read_to_string(app.file("csv_out/copy.csv")).unwrap(),
        "k,v\n1,x\n2,y\n1,x\n2,y\n"
    );
    // No staging files are left beside the targets.
    for dir in ["lake", "csv_out", "lake/facts"] {
        for e in std::fs::read_dir(app.file(dir)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            assert!(!name.starts_with(".sluice-staging"), "{dir}/{name}");
        }
    }
}

#[tokio::test]
async fn progress_never_decreases_and_is_100_exactly_at_completed() {
    let app = spawn_app_with(AppOptions::default().env("SLUICE__ENGINE__PERSIST_INTERVAL_MS", "10")).await;
    let mut csv = String::from("id,v\n");
    for i in 0..200_000 {
        csv.push_str(&format!("{i},{}\n", i % 13));
    }
    app.write_file("in/big.csv", csv);
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let input = app
        .create_input(json!({
            "name": "progress", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "big", "store_id": src, "path": "big.csv"}],
            "transforms": [
                // About 25 batches each, 20 ms apiece: long enough to be watched on any machine.
                {"name": "a", "sql": "SELECT v, count(*) AS n FROM big WHERE sluice_sleep(20) GROUP BY v"},
                {"name": "b", "sql": "SELECT id FROM big WHERE v = 3 AND sluice_sleep(20)"}
            ],
            "options": {"max_parallel_tasks": 1}
        }))
        .await;
    let id = app.start_flow(input).await;
    let mut seen: Vec<(f64, String)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let f = app.flow(id).await;
        let p = f["output"]["progress"]["percent"].as_f64().unwrap();
        let s = state(&f).to_string();
        seen.push((p, s.clone()));
        if is_final(&s) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "flow did not end");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in seen.windows(2) {
        assert!(w[0].0 <= w[1].0, "progress went down: {seen:?}");
    }
    for (p, s) in &seen {
        assert_eq!(
            *p == 100.0,
            s == "COMPLETED",
            "100% only when COMPLETED: {seen:?}"
        );
    }
    assert_eq!(seen.last().unwrap(), &(100.0, "COMPLETED".to_string()));
    let distinct: std::collections::BTreeSet<u64> = seen.iter().map(|(p, _)| (*p * 10.0) as u64).collect();
    assert!(
        distinct.len() >= 3,
        "progress should move while the flow runs: {seen:?}"
    );
}

#[tokio::test]
async fn a_restarted_server_keeps_every_store_input_flow_and_output() {
    let app = spawn_app().await;
    app.write_file("in/a.csv", "x\n1\n2\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let input = app
        .create_input(json!({
            "name": "keep", "source_store_ids": [src], "target_store_id": db,
            "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
            "transforms": [{"name": "s", "sql": "SELECT sum(x) AS total FROM a"}]
        }))
        .await;
    let flow = app.start_flow(input).await;
    app.wait_final(flow).await;
    let before = (
        app.get(&format!("/data-stores/{src}")).await.body,
        app.get(&format!("/flow-inputs/{input}")).await.body,
        app.flow(flow).await,
        app.get("/flows").await.body,
    );
    let (data, files, temp) = app.stop().await;
    let app = spawn_app_with(AppOptions {
        dirs: Some((data, files)),
        ..Default::default()
    })
    .await;
    let after = (
        app.get(&format!("/data-stores/{src}")).await.body,
        app.get(&format!("/flow-inputs/{input}")).await.body,
        app.flow(flow).await,
        app.get("/flows").await.body,
    );
    assert_eq!(before, after);
    assert_eq!(state(&after.2), "COMPLETED");
    drop(temp);
}

#[tokio::test]
async fn a_second_server_on_the_same_sqlite_metadata_refuses_to_start() {
    let temp = tempfile::tempdir().unwrap();
    let (data, files) = (temp.path().join("data"), temp.path().join("files"));
    std::fs::create_dir_all(&files).unwrap();
    // SQLite metadata whatever SLUICE_TEST_METADATA_URL says: the lock is SQLite's.
    let url = format!("sqlite://{}?mode=rwc", data.join("sluice.db").display());
    let first = spawn_app_with(
        AppOptions {
            dirs: Some((data.clone(), files.clone())),
            ..Default::default()
        }
        .env("SLUICE__DATABASE__URL", &url),
    )
    .await;
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env("SLUICE__SERVER__PORT", "0")
        .env("SLUICE__DATA_DIR", &data)
        .env("SLUICE__DATABASE__URL", &url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = second.kill();
            panic!("the second server did not refuse to start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = second.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr).to_string() + &String::from_utf8_lossy(&output.stdout);
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("another Sluice process is using the metadata database"),
        "{text}"
    );
    // The first one serves on, and once it stops the data directory can be served again.
    assert_eq!(first.get("/flows").await.status, 200);
    let (data, files, _) = first.stop().await;
    let again = spawn_app_with(
        AppOptions {
            dirs: Some((data, files)),
            ..Default::default()
        }
        .env("SLUICE__DATABASE__URL", &url),
    )
    .await;
    assert_eq!(again.get("/flows").await.status, 200);
}
