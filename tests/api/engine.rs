//! How the DAG runs: what is inlined and what is materialized gives the same rows; an inlined
//! node is still a task with its own state, rows and errors; a flow over more data than its
//! memory limit completes by spilling.

use serde_json::{json, Value};

use crate::helpers::*;

/// Rows with ties, NULL keys and exact duplicates: `k` repeats, `v` ties within a key, some
/// `k` are NULL, every 97th line is written twice.
fn tricky_csv(rows: usize) -> String {
    let mut s = String::from("id,k,v,note\n");
    for i in 0..rows {
        let k = if i % 13 == 0 {
            String::new()
        } else {
            (i % 50).to_string()
        };
        let line = format!("{i},{k},{},n{}\n", i % 7, i % 3);
        s.push_str(&line);
        if i % 97 == 0 {
            s.push_str(&line);
        }
    }
    s
}

fn transforms(materialize: Option<bool>) -> Value {
    let t = |name: &str, sql: &str| {
        let mut v = json!({"name": name, "sql": sql});
        if let Some(m) = materialize {
            v["materialize"] = json!(m);
        }
        v
    };
    json!([
        // The dedupe idiom over duplicates and NULL keys: one row per (id, k, v, note).
        t("dedup", "SELECT id, k, v, note FROM (SELECT *, row_number() OVER (PARTITION BY id, k, v, note ORDER BY id) AS rn FROM src) WHERE rn = 1"),
        t("keyed", "SELECT k, v, count(*) AS n FROM dedup GROUP BY k, v"),
        t("by_key", "SELECT k, sum(n) AS n, max(v) AS top FROM keyed GROUP BY k"),
        t("ranked", "SELECT k, v, n, rank() OVER (PARTITION BY k ORDER BY n DESC, v) AS r FROM keyed"),
        t("joined", "SELECT d.k, count(*) AS rows_, sum(d.v) AS total FROM dedup d JOIN by_key b ON b.k = d.k WHERE d.v > 1 GROUP BY d.k")
    ])
}

async fn run(app: &TestApp, materialize: Option<bool>, name: &str) -> Value {
    let src = app.csv_store(&format!("raw_{name}"), "in").await;
    let lake = app
        .parquet_store(&format!("lake_{name}"), &format!("lake_{name}"))
        .await;
    let input = app
        .create_input(json!({
            "name": name, "source_store_ids": [src], "target_store_id": lake,
            "sources": [{"name": "src", "store_id": src, "path": "t.csv"}],
            "transforms": transforms(materialize),
            "outputs": [{"node": "ranked", "table": "ranked"}, {"node": "joined", "table": "joined"},
                        {"node": "by_key", "table": "by_key"}]
        }))
        .await;
    let flow = app.start_flow(input).await;
    let done = app.wait_final(flow).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    done
}

async fn results(app: &TestApp, name: &str) -> Vec<Vec<Value>> {
    let lake = app.file(&format!("lake_{name}"));
    vec![
        parquet_rows(&lake.join("ranked"), "SELECT * FROM t ORDER BY k NULLS FIRST, v").await,
        parquet_rows(&lake.join("joined"), "SELECT * FROM t ORDER BY k NULLS FIRST").await,
        parquet_rows(&lake.join("by_key"), "SELECT * FROM t ORDER BY k NULLS FIRST").await,
    ]
}

#[tokio::test]
async fn every_row_is_the_same_inlined_or_materialized() {
    let app = spawn_app().await;
    app.write_file("in/t.csv", tricky_csv(3000));
    let planned = run(&app, None, "planned").await;
    run(&app, Some(true), "forced").await;
    run(&app, Some(false), "recomputed").await;
    let expected = results(&app, "forced").await;
    assert_eq!(results(&app, "planned").await, expected);
    assert_eq!(results(&app, "recomputed").await, expected);
    assert!(!expected[0].is_empty() && !expected[1].is_empty());
    // NULL keys form one group, as in SQL.
    assert_eq!(expected[2][0]["k"], Value::Null, "{:?}", expected[2][0]);
    // Every node is a task with its own state and rows, inlined or not.
    for t in ["src", "dedup", "keyed", "by_key", "ranked", "joined"] {
        let task = task(&planned, t);
        assert_eq!(task["state"], "COMPLETED", "{t}: {task}");
        assert!(task["rows"].as_u64().is_some_and(|r| r > 0), "{t}: {task}");
        assert!(
            task["started_utc"].is_string() && task["finished_utc"].is_string(),
            "{task}"
        );
    }
    // 3000 lines and 31 duplicates (every 97th of 3000), NULL keys included.
    assert_eq!(task(&planned, "src")["rows"], 3031);
    assert_eq!(task(&planned, "dedup")["rows"], 3000);
}

#[tokio::test]
async fn an_error_inside_an_inlined_node_names_that_node() {
    let app = spawn_app().await;
    app.write_file("in/t.csv", "a,b\n1,0\n2,1\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    // `bad_plan` does not plan (unknown column); `bad_run` fails while it runs (1 / 0).
    for (name, sql, expect) in [
        ("bad_plan", "SELECT a, nope FROM src", "nope"),
        (
            "bad_run",
            "SELECT a, CAST(a AS INT) / CAST(b AS INT) AS q FROM src",
            "Divide by zero",
        ),
    ] {
        let input = app
            .create_input(json!({
                "name": name, "source_store_ids": [src], "target_store_id": db,
                "sources": [{"name": "src", "store_id": src, "path": "t.csv"}],
                "transforms": [
                    {"name": "inner_node", "sql": sql},
                    {"name": "outer_node", "sql": "SELECT * FROM inner_node"}
                ]
            }))
            .await;
        let planned = app.get(&format!("/flow-inputs/{input}")).await.expect(200).body;
        let inner = planned["dag"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "inner_node")
            .unwrap()
            .clone();
        assert_eq!(inner["materialize"], false, "{inner}");
        let done = app.wait_final(app.start_flow(input).await).await;
        assert_eq!(state(&done), "FAILED", "{done:#}");
        let failed = task(&done, "inner_node");
        assert_eq!(failed["state"], "FAILED", "{name}: {done:#}");
        let error = failed["error"].as_str().unwrap_or_default();
        assert!(error.contains(expect), "{name}: {error}");
        assert_ne!(task(&done, "outer_node")["state"], "COMPLETED", "{done:#}");
        let errors = done["output"]["errors"]["lines"].to_string();
        assert!(errors.contains("[inner_node]"), "{name}: {errors}");
        assert!(!errors.contains("[outer_node]"), "{name}: {errors}");
    }
}

#[tokio::test]
async fn a_flow_over_more_data_than_its_memory_limit_completes_by_spilling() {
    let app = spawn_app().await;
    // About 40 MB of rows behind a 16 MB limit: a sort, a high-cardinality aggregate and a
    // join of the whole set must spill to disk to finish.
    let rows = 400_000;
    let mut csv = String::with_capacity(rows * 100);
    csv.push_str("id,grp,payload\n");
    for i in 0..rows {
        csv.push_str(&format!("{i},{},{:0>80}\n", (i * 7919) % (rows / 2), i));
    }
    app.write_file("in/big.csv", csv);
    let src = app.csv_store("raw", "in").await;
    let lake = app.parquet_store("lake", "lake").await;
    let input = app
        .create_input(json!({
            "name": "spill", "source_store_ids": [src], "target_store_id": lake,
            "sources": [{"name": "big", "store_id": src, "path": "big.csv"}],
            "transforms": [
                {"name": "sorted", "sql": "SELECT id, payload FROM big ORDER BY payload DESC"},
                {"name": "groups", "sql": "SELECT grp, count(*) AS n, max(payload) AS top FROM big GROUP BY grp"},
                {"name": "pairs", "sql": "SELECT a.grp, count(*) AS n FROM big a JOIN big b ON a.id = b.id GROUP BY a.grp"}
            ],
            "options": {"memory_limit_mb": 16}
        }))
        .await;
    let done = app.wait_final(app.start_flow(input).await).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    assert_eq!(task(&done, "sorted")["rows"], rows);
    assert_eq!(task(&done, "groups")["rows"], rows / 2);
    let lake = app.file("lake");
    let pairs = parquet_rows(
        &lake.join("pairs"),
        "SELECT count(*) AS groups, sum(n) AS n FROM t",
    )
    .await;
    assert_eq!(pairs, vec![json!({"groups": rows / 2, "n": rows})]);
    let first = parquet_rows(&lake.join("sorted"), "SELECT max(id) AS id FROM t").await;
    assert_eq!(first, vec![json!({"id": rows - 1})]);
}
