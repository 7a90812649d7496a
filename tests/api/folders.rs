//! Flow inputs as folders (`sluice.toml` + one `.sql` file per transform) through the real
//! `sluice` binary against a real server: the folder form of `examples/shop` plans the same DAG
//! as its JSON form and produces the same rows; `inputs validate` reports every problem at its
//! file and line and stores nothing (the dry run); `run DIR --follow` creates the input only
//! when it changed and exits 0/1 like `follow`.

use std::path::{Path, PathBuf};
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
    tokio::time::timeout(Duration::from_secs(120), sluice(app, args).output())
        .await
        .unwrap_or_else(|_| panic!("sluice {args:?} did not finish"))
        .expect("run sluice")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn shop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop")
}

/// Copies the shop's CSV files and creates its two stores, by their names, with paths in the
/// app's files directory. Returns (raw, warehouse) ids.
async fn shop_stores(app: &TestApp) -> (i64, i64) {
    for entry in std::fs::read_dir(shop_dir().join("data")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        app.write_file(
            &format!("examples/shop/data/{name}"),
            std::fs::read(&path).unwrap(),
        );
    }
    let mut ids = Vec::new();
    for file in ["shop_raw.json", "shop_warehouse.json"] {
        let text = std::fs::read_to_string(shop_dir().join("stores").join(file)).unwrap();
        let mut body: Value = serde_json::from_str(&text).unwrap();
        let rel = body["connection"]["path"].as_str().unwrap().to_string();
        body["connection"]["path"] = json!(app.file(&rel));
        ids.push(app.create_store(body).await);
    }
    (ids[0], ids[1])
}

/// The JSON form of the shop with the given store ids.
fn shop_json(raw: i64, warehouse: i64) -> Value {
    let text = std::fs::read_to_string(shop_dir().join("flow_input.json")).unwrap();
    let mut input: Value = serde_json::from_str(&text).unwrap();
    input["source_store_ids"] = json!([raw]);
    input["target_store_id"] = json!(warehouse);
    for source in input["sources"].as_array_mut().unwrap() {
        source["store_id"] = json!(raw);
    }
    input
}

/// A DAG as a graph: nodes by name with their kind, sorted dependencies and materialization
/// decision (the declaration order of transforms, and so `order`, may differ between forms).
fn graph(dag: &Value) -> Vec<Value> {
    let mut nodes: Vec<Value> = dag["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let mut deps: Vec<String> = n["depends_on"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap().to_string())
                .collect();
            deps.sort();
            json!({"name": n["name"], "kind": n["kind"], "depends_on": deps,
                   "materialize": n["materialize"], "why": n["why"]})
        })
        .collect();
    nodes.sort_by_key(|n| n["name"].as_str().unwrap().to_string());
    nodes
}

/// Whether `order` lists every node of `dag` after the nodes it depends on.
fn is_topological(dag: &Value) -> bool {
    let order: Vec<&str> = dag["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let nodes = dag["nodes"].as_array().unwrap();
    order.len() == nodes.len()
        && nodes.iter().all(|n| {
            let at = order.iter().position(|o| *o == n["name"]).unwrap();
            n["depends_on"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| order.iter().position(|o| o == d).unwrap() < at)
        })
}

async fn input_count(app: &TestApp) -> usize {
    app.get("/flow-inputs?limit=500").await.expect(200).body["items"]
        .as_array()
        .unwrap()
        .len()
}

#[tokio::test]
async fn the_shop_folder_plans_the_same_dag_as_its_json_form_and_gives_the_same_rows() {
    let app = spawn_app().await;
    let (raw, warehouse) = shop_stores(&app).await;
    let marts = shop_dir().join("marts");
    let marts = marts.to_str().unwrap();

    // The dry run of each form stores nothing.
    let out = run(&app, &["--json", "inputs", "validate", marts]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let folder: Value = serde_json::from_slice(&out.stdout).unwrap();
    let json_form = app
        .post("/flow-inputs?dry_run=true", &shop_json(raw, warehouse))
        .await
        .expect(200)
        .body;
    assert_eq!(input_count(&app).await, 0);
    assert!(folder.get("id").is_none(), "{folder:#}");
    assert_eq!(graph(&folder["dag"]), graph(&json_form["dag"]));
    assert!(is_topological(&folder["dag"]), "{:#}", folder["dag"]);
    for same in [
        "name",
        "source_store_ids",
        "target_store_id",
        "sources",
        "outputs",
        "options",
    ] {
        assert_eq!(folder[same], json_form[same], "{same}");
    }
    let names = |v: &Value| {
        let mut n: Vec<String> = v["transforms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&folder), names(&json_form));
    // The SQL is the file's, as written.
    let stg_orders = folder["transforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "stg_orders")
        .unwrap();
    assert_eq!(
        stg_orders["sql"],
        std::fs::read_to_string(shop_dir().join("marts/stg_orders.sql")).unwrap()
    );
    let human = run(&app, &["inputs", "validate", marts]).await;
    assert_eq!(human.status.code(), Some(0), "{}", text(&human));
    assert!(
        stdout(&human).contains("is valid: 3 source(s), 7 transform(s), 3 output(s)"),
        "{}",
        text(&human)
    );

    // `run --follow`: created, run, followed; exit 0; the rows are the JSON form's.
    let out = run(&app, &["run", marts, "--follow"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = stdout(&out);
    assert!(
        said.contains("created flow input 1 (shop_marts)"),
        "{}",
        text(&out)
    );
    assert!(said.contains("started flow 1 (flow input 1)"), "{}", text(&out));
    assert!(said.contains("flow 1 COMPLETED in "), "{}", text(&out));
    let db = app.file("examples/shop/out/warehouse.db");
    let tables = [
        "SELECT * FROM customers ORDER BY customer_id",
        "SELECT * FROM customer_ranking ORDER BY country, country_rank, customer_id",
        "SELECT * FROM category_monthly ORDER BY category, month",
    ];
    let mut from_folder = Vec::new();
    for sql in tables {
        from_folder.push(sqlite_rows(&db, sql).await);
    }
    assert_eq!(from_folder[0].len(), 22);
    let json_input = app.create_input(shop_json(raw, warehouse)).await;
    let flow = app.start_flow(json_input).await;
    assert_eq!(state(&app.wait_final(flow).await), "COMPLETED");
    for (sql, rows) in tables.iter().zip(&from_folder) {
        assert_eq!(&sqlite_rows(&db, sql).await, rows, "{sql}");
    }

    // Unchanged: the next run reuses the stored input; a changed file makes a new one.
    let out = run(&app, &["run", marts]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("flow input 1 (shop_marts) is unchanged"),
        "{}",
        text(&out)
    );
    assert_eq!(input_count(&app).await, 2);
    let copy = app.file("marts_copy");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(shop_dir().join("marts")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        copy.join("stg_products.sql"),
        "SELECT product_id, sku, product_name, category, unit_price FROM products\n",
    )
    .unwrap();
    let out = run(&app, &["run", copy.to_str().unwrap(), "--follow"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("created flow input 3 (shop_marts)"),
        "{}",
        text(&out)
    );
}

/// A folder with problems in its SQL files and its manifest.
fn write_bad_folder(app: &TestApp) -> PathBuf {
    app.write_file("in/orders.csv", "id,amount\n1,10\n");
    app.write_file(
        "bad/sluice.toml",
        "name = \"bad\"\ntarget_store = \"w\"\n\n[[sources]]\nname = \"orders\"\nstore = \"raw\"\npath = \"orders.csv\"\n\n[options]\nmax_parallel_tasks = 0\n",
    );
    app.write_file(
        "bad/stg.sql",
        "-- clean the orders\nSELECT id,\n       amount\nFROM ordrs\n",
    );
    app.write_file("bad/fine.sql", "SELECT count(*) AS n FROM orders");
    app.file("bad")
}

#[tokio::test]
async fn validate_reports_every_problem_at_its_file_and_line_and_stores_nothing() {
    let app = spawn_app().await;
    app.csv_store("raw", "in").await;
    app.sqlite_store("w", "out/w.db").await;
    let dir = write_bad_folder(&app);
    let d = dir.display();
    let out = run(&app, &["inputs", "validate", dir.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{}", text(&out));
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{d}/stg.sql:4:6: transforms[1].sql: unknown table \"ordrs\""
        )) && l.contains("did you mean \"orders\"")),
        "{}",
        text(&out)
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{d}/sluice.toml:10:22: options.max_parallel_tasks: "))),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2 problem(s)"),
        "{}",
        text(&out)
    );
    assert_eq!(input_count(&app).await, 0, "validate stores nothing");
    // As JSON.
    let out = run(&app, &["--json", "inputs", "validate", dir.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let problems: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stg = problems["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["file"].as_str().unwrap().ends_with("stg.sql"))
        .unwrap();
    assert_eq!((stg["line"].clone(), stg["column"].clone()), (json!(4), json!(6)));

    // `inputs create` and `run` refuse it with the same places, exit 3, and store nothing.
    let out = run(&app, &["inputs", "create", dir.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{d}/stg.sql:4:6: ")),
        "{}",
        text(&out)
    );
    let out = run(&app, &["run", dir.to_str().unwrap(), "--follow"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(input_count(&app).await, 0);

    // Problems the folder itself has are found before the server is asked: an unknown store.
    std::fs::write(
        dir.join("sluice.toml"),
        "target_store = \"warehouse\"\n[[sources]]\nname = \"orders\"\nstore = \"raw\"\npath = \"orders.csv\"\n",
    )
    .unwrap();
    let out = run(&app, &["inputs", "validate", dir.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("{d}/sluice.toml:1:16: no data store is named \"warehouse\""),
        "{}",
        text(&out)
    );
    // An unknown key is the server's 400, at its line.
    std::fs::write(
        dir.join("sluice.toml"),
        "target_store = \"w\"\n[[sources]]\nname = \"orders\"\nstore = \"raw\"\npth = \"orders.csv\"\n",
    )
    .unwrap();
    let out = run(&app, &["inputs", "validate", dir.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).starts_with(&format!("{d}/sluice.toml:5:")) && stdout(&out).contains("pth"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn run_follow_exits_0_when_completed_and_1_when_failed() {
    let app = spawn_app().await;
    app.write_file("in/orders.csv", "id,amount\n1,10\n2,20\n");
    app.csv_store("raw", "in").await;
    app.sqlite_store("w", "out/w.db").await;
    app.write_file(
        "ok/sluice.toml",
        "target_store = \"w\"\n[[sources]]\nname = \"orders\"\nstore = \"raw\"\npath = \"orders.csv\"\n",
    );
    app.write_file("ok/total.sql", "SELECT sum(amount) AS total FROM orders\n");
    let out = run(&app, &["run", app.file("ok").to_str().unwrap(), "--follow"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("INFO [total] completed: 1 rows"),
        "{}",
        text(&out)
    );
    assert_eq!(
        sqlite_rows(&app.file("out/w.db"), "SELECT total FROM total").await,
        vec![vec![json!(30)]]
    );
    // The input's name is the folder's.
    let flows = app.get("/flow-inputs/1").await.expect(200).body;
    assert_eq!(flows["name"], "ok");

    // Valid, but it fails when it runs (the file is not there): exit 1 with the error.
    app.write_file(
        "missing/sluice.toml",
        "target_store = \"w\"\n[[sources]]\nname = \"later\"\nstore = \"raw\"\npath = \"later.csv\"\n",
    );
    app.write_file("missing/copy.sql", "SELECT * FROM later");
    let out = run(&app, &["run", app.file("missing").to_str().unwrap(), "--follow"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stdout(&out).contains("FAILED"), "{}", text(&out));
    assert!(stdout(&out).contains("later.csv"), "{}", text(&out));
    // A SQL error when the flow runs points into its .sql file.
    app.write_file(
        "broken/sluice.toml",
        "target_store = \"w\"\n[[sources]]\nname = \"orders\"\nstore = \"raw\"\npath = \"orders.csv\"\n",
    );
    app.write_file("broken/totals.sql", "SELECT id,\n  amout FROM orders");
    let out = run(&app, &["run", app.file("broken").to_str().unwrap(), "--follow"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains(&format!(
            "{}:2:3: totals: SQL error at line 2, column 3",
            app.file("broken/totals.sql").display()
        )),
        "{}",
        text(&out)
    );
    // Without --follow: started, exit 0 at once.
    let out = run(&app, &["--json", "run", app.file("ok").to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let flow: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(flow["flow_input_id"], 1, "the unchanged input is reused");
    // `flows retry` starts a retry of the failed flow (which kept nothing here: 422, exit 3).
    let failed = app.get("/flows?state=FAILED").await.expect(200).body["items"][0]["id"]
        .as_i64()
        .unwrap();
    let out = run(&app, &["flows", "retry", &failed.to_string()]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kept nothing to reuse"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn a_dry_run_answers_the_planned_input_and_stores_nothing() {
    let app = spawn_app().await;
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let body = json!({
        "name": "dry", "source_store_ids": [src], "target_store_id": db,
        "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
        "transforms": [{"name": "t", "sql": "SELECT * FROM a"}]
    });
    let planned = app
        .post("/flow-inputs?dry_run=true", &body)
        .await
        .expect(200)
        .body;
    assert_eq!(planned["dag"]["order"], json!(["a", "t", "t->t"]));
    assert_eq!(planned["options"]["max_attempts"], 3);
    assert!(planned.get("id").is_none(), "{planned:#}");
    assert_eq!(input_count(&app).await, 0);
    // The stored form is the same, plus an id (and its own creation time).
    let mut created = app
        .post("/flow-inputs?dry_run=false", &body)
        .await
        .expect(201)
        .body;
    let mut planned = planned.clone();
    created.as_object_mut().unwrap().remove("id");
    created.as_object_mut().unwrap().remove("created_utc");
    planned.as_object_mut().unwrap().remove("created_utc");
    assert_eq!(created, planned);
    let mut bad = body.clone();
    bad["transforms"][0]["sql"] = json!("SELECT * FROM b");
    let refused = app.post("/flow-inputs?dry_run=true", &bad).await.expect(422);
    assert_eq!(refused.error_paths(), ["transforms[0].sql"]);
    app.post("/flow-inputs?dry_run=maybe", &body).await.expect(400);
    assert_eq!(input_count(&app).await, 1);
}
