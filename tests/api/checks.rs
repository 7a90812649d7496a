//! Issue 12, part 1: checks that gate publishing (each type passing and failing on data with
//! NULLs, duplicates and orphans; an `error` check that fails leaves every target as it was,
//! a `warn` check does not block), output contracts (missing, extra, wrong type, NULL in a
//! non-nullable column) and the dry run of a flow input (nothing stored).

use serde_json::{json, Value};

use crate::contract::*;
use crate::helpers::*;

/// A CSV store `raw` with `orders.csv`, a SQLite target `wh`, and a flow input body reading
/// the orders with one transform `stg_orders` persisted as `orders`.
async fn shop(app: &TestApp) -> (i64, i64) {
    app.write_file(
        "raw/orders.csv",
        "order_id,customer_id,status,amount\n1,10,placed,5.5\n2,11,shipped,7\n3,10,completed,1\n",
    );
    let raw = app.csv_store("raw", "raw").await;
    let wh = app.sqlite_store("wh", "wh.db").await;
    (raw, wh)
}

fn input(raw: i64, wh: i64) -> Value {
    json!({
        "name": "shop",
        "source_store_ids": [raw],
        "target_store_id": wh,
        "sources": [{"name": "orders", "store_id": raw, "path": "orders.csv"}],
        "transforms": [{"name": "stg_orders", "sql": "SELECT order_id, customer_id, lower(status) AS status, amount FROM orders"}],
        "outputs": [{"node": "stg_orders", "table": "orders"}]
    })
}

#[tokio::test]
async fn a_dry_run_plans_like_a_create_and_stores_nothing() {
    let app = spawn_app().await;
    let (raw, wh) = shop(&app).await;
    let body = input(raw, wh);
    let before = app.get("/flow-inputs").await.expect(200).body;

    let planned = app.post("/flow-inputs?dry_run=true", &body).await.expect(200);
    assert!(planned.body.get("id").is_none(), "{:#}", planned.body);
    assert!(planned.headers.get("location").is_none());
    assert_eq!(app.get("/flow-inputs").await.expect(200).body, before);

    // The same as what a create stores, but for the id and the time.
    let created = app.post("/flow-inputs", &body).await.expect(201).body;
    let mut expected = created.clone();
    let object = expected.as_object_mut().unwrap();
    object.remove("id");
    object.remove("created_utc");
    let mut got = planned.body.clone();
    got.as_object_mut().unwrap().remove("created_utc");
    assert_eq!(got, expected);
    assert_eq!(
        planned.body["dag"]["order"],
        json!(["orders", "stg_orders", "stg_orders->orders"])
    );

    // Invalid: the same 422 as a create, and still nothing stored.
    let after_create = app.get("/flow-inputs").await.expect(200).body;
    let mut bad = body.clone();
    bad["transforms"][0]["sql"] = json!("SELECT * FROM ordrs");
    let dry = app.post("/flow-inputs?dry_run=true", &bad).await;
    assert_problem(&dry, 422);
    let real = app.post("/flow-inputs", &bad).await;
    assert_problem(&real, 422);
    assert_eq!(dry.body, real.body);
    assert!(dry.body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("did you mean \"orders\""));
    assert_eq!(app.get("/flow-inputs").await.expect(200).body, after_create);

    // dry_run=false is a create; anything but a boolean is a 400.
    app.post("/flow-inputs?dry_run=false", &body).await.expect(201);
    let r = app.post("/flow-inputs?dry_run=maybe", &body).await;
    assert_problem(&r, 400);
}

const DIRTY_ORDERS: &str = "order_id,customer_id,status,amount_cents,note\n\
1,10,placed,500,\n\
2,11,shipped,700,\n\
3,10,completed,100,\n\
3,12,returned,-50,\n\
4,,lost,200,LONGNOTE\n\
5,99,placed,0,\n";

const CUSTOMERS: &str = "customer_id,name\n10,ann\n11,bob\n12,cy\n";

/// `orders.csv` with a NULL customer, a duplicated order, a status nobody accepts, an orphan
/// customer, a negative amount and a 300-character note; `customers.csv`.
fn write_dirty(app: &TestApp) {
    app.write_file(
        "raw/orders.csv",
        DIRTY_ORDERS.replace("LONGNOTE", &"n".repeat(300)),
    );
    app.write_file("raw/customers.csv", CUSTOMERS);
}

/// The tables of the SQLite target `wh.db` (none when the file was never created).
async fn tables(app: &TestApp) -> Vec<String> {
    let db = app.file("wh.db");
    if !db.exists() {
        return vec![];
    }
    sqlite_rows(
        &db,
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
    )
    .await
    .into_iter()
    .map(|r| r[0].as_str().unwrap().to_string())
    .collect()
}

/// The check of `output.checks` named `name`.
fn check<'a>(flow: &'a Value, name: &str) -> &'a Value {
    flow["output"]["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {flow:#}"))
}

fn shop_input(raw: i64, target: i64, outputs: Value, checks: Value) -> Value {
    json!({
        "name": "shop_checks",
        "source_store_ids": [raw],
        "target_store_id": target,
        "sources": [
            {"name": "orders", "store_id": raw, "path": "orders.csv"},
            {"name": "customers", "store_id": raw, "path": "customers.csv"}
        ],
        "transforms": [
            {"name": "stg_orders", "sql": "SELECT order_id, customer_id, lower(status) AS status, amount_cents, note FROM orders"},
            {"name": "dim_customers", "sql": "SELECT customer_id, name FROM customers"},
            {"name": "clean_orders", "sql": "SELECT * FROM stg_orders WHERE customer_id IN (SELECT customer_id FROM dim_customers) AND status <> 'lost' AND amount_cents >= 0 AND order_id <> 3"}
        ],
        "outputs": outputs,
        "checks": checks
    })
}

#[tokio::test]
async fn every_check_type_passes_on_clean_data_and_fails_on_nulls_duplicates_and_orphans() {
    let app = spawn_app().await;
    write_dirty(&app);
    let raw = app.csv_store("raw", "raw").await;
    let wh = app.sqlite_store("wh", "wh.db").await;
    let on = |node: &str, severity: &str, extra: Value| {
        let mut c = json!({"node": node, "severity": severity});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let mut checks = Vec::new();
    // Every type failing on the dirty node (warn: the flow still completes) ...
    for (node, severity, accepted, max, query) in [
        (
            "stg_orders",
            "warn",
            json!(["placed", "shipped", "completed", "returned"]),
            json!({"max": 3}),
            "SELECT order_id, note FROM stg_orders WHERE length(note) > 100",
        ),
        // ... and passing on the clean one (error: a failure would fail the flow).
        (
            "clean_orders",
            "error",
            json!(["placed", "shipped"]),
            json!({"min": 1, "max": 10}),
            "SELECT * FROM clean_orders WHERE status = 'lost'",
        ),
    ] {
        checks.push(on(
            node,
            severity,
            json!({"type": "not_null", "columns": ["order_id", "customer_id"]}),
        ));
        checks.push(on(
            node,
            severity,
            json!({"type": "unique", "columns": ["order_id"]}),
        ));
        checks.push(on(
            node,
            severity,
            json!({"type": "accepted_values", "column": "status", "values": accepted}),
        ));
        checks.push(on(
            node,
            severity,
            json!({"type": "relationships", "column": "customer_id",
                                             "to": "dim_customers", "to_column": "customer_id"}),
        ));
        let mut count = on(node, severity, json!({"type": "row_count"}));
        for (k, v) in max.as_object().unwrap() {
            count[k] = v.clone();
        }
        checks.push(count);
        checks.push(on(
            node,
            severity,
            json!({"type": "expression", "sql": "amount_cents >= 0"}),
        ));
        checks.push(on(
            node,
            severity,
            json!({"type": "query", "name": format!("odd_{node}"), "sql": query}),
        ));
    }
    let body = shop_input(
        raw,
        wh,
        json!([{"node": "clean_orders", "table": "clean_orders"}]),
        json!(checks),
    );
    let created = app.post("/flow-inputs", &body).await.expect(201).body;

    // The planned DAG: a check node per check, depending on its node (and on `to`); the nodes
    // checks read are materialized, so each check reads the checkpoint.
    let dag = &created["dag"];
    let node = |name: &str| {
        dag["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("no node {name} in {dag:#}"))
            .clone()
    };
    let rel = node("relationships(stg_orders.customer_id)");
    assert_eq!(rel["kind"], "check");
    assert_eq!(rel["depends_on"], json!(["stg_orders", "dim_customers"]));
    assert_eq!(
        node("unique(clean_orders.order_id)")["depends_on"],
        json!(["clean_orders"])
    );
    assert_eq!(node("clean_orders")["materialize"], true, "{dag:#}");
    assert_eq!(node("stg_orders")["materialize"], true, "{dag:#}");
    assert_eq!(created["checks"].as_array().unwrap().len(), 14);
    assert_eq!(
        created["checks"][0]["name"],
        "not_null(stg_orders.order_id,customer_id)"
    );
    assert_eq!(created["checks"][7]["severity"], "error");

    let flow = app.start_flow(created["id"].as_i64().unwrap()).await;
    let done = app.wait_final(flow).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    assert_eq!(done["output"]["errors"]["lines"], json!([]));
    // The warn checks did not block: the output is published.
    let rows = sqlite_rows(
        &app.file("wh.db"),
        "SELECT order_id, status FROM clean_orders ORDER BY order_id",
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![json!(1), json!("placed")], vec![json!(2), json!("shipped")]]
    );

    let failed = |name: &str, rows: u64| {
        let c = check(&done, name);
        assert_eq!(c["state"], "WARNED", "{c:#}");
        assert_eq!(c["severity"], "warn");
        assert_eq!(c["failing_rows"], rows, "{c:#}");
        assert!(c["finished_utc"].is_string());
        assert_eq!(task(&done, name)["kind"], "check");
        assert_eq!(task(&done, name)["state"], "COMPLETED");
        c.clone()
    };
    let not_null = failed("not_null(stg_orders.order_id,customer_id)", 1);
    assert_eq!(not_null["sample"][0]["order_id"], 4);
    assert_eq!(not_null["sample"][0]["customer_id"], Value::Null);
    let unique = failed("unique(stg_orders.order_id)", 1);
    assert_eq!(unique["sample"], json!([{"order_id": 3, "count": 2}]));
    let accepted = failed("accepted_values(stg_orders.status)", 1);
    assert_eq!(accepted["sample"][0]["status"], "lost");
    // The NULL customer is not an orphan (not_null catches it); customer 99 is.
    let orphans = failed("relationships(stg_orders.customer_id)", 1);
    assert_eq!(orphans["sample"][0]["customer_id"], 99);
    let count = failed("row_count(stg_orders)", 1);
    assert_eq!(count["sample"], json!([{"row_count": 6}]));
    assert_eq!(
        count["message"],
        "check row_count(stg_orders) failed: stg_orders has 6 rows; expected at most 3"
    );
    let negative = failed("expression(stg_orders)", 1);
    assert_eq!(negative["sample"][0]["amount_cents"], -50);
    let query = failed("odd_stg_orders", 1);
    assert_eq!(query["sample"][0]["order_id"], 4);
    // A long value is cut.
    let note = query["sample"][0]["note"].as_str().unwrap();
    assert_eq!(note.chars().count(), 101, "{note}");
    assert!(note.ends_with('…'));
    let message = unique["message"].as_str().unwrap();
    assert!(
        message.contains("1 duplicated key of (order_id)") && message.contains(r#"{"count":2,"order_id":3}"#),
        "{message}"
    );

    for name in [
        "not_null(clean_orders.order_id,customer_id)",
        "unique(clean_orders.order_id)",
        "accepted_values(clean_orders.status)",
        "relationships(clean_orders.customer_id)",
        "row_count(clean_orders)",
        "expression(clean_orders)",
        "odd_clean_orders",
    ] {
        let c = check(&done, name);
        assert_eq!(c["state"], "PASSED", "{c:#}");
        assert_eq!(c["failing_rows"], 0);
        assert_eq!(c["sample"], json!([]));
    }
    // Warnings are logged, passes too.
    let logs = done["output"]["logs"]["lines"].as_array().unwrap();
    let has = |needle: &str| logs.iter().any(|l| l.as_str().unwrap().contains(needle));
    assert!(
        has("WARN [unique(stg_orders.order_id)] check unique(stg_orders.order_id) failed"),
        "{logs:#?}"
    );
    assert!(
        has("INFO [unique(clean_orders.order_id)] check passed"),
        "{logs:#?}"
    );

    let metrics = reqwest::get(format!("{}/metrics", app.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "sluice_checks_total{result=\"warned\"} 7",
        "sluice_checks_total{result=\"passed\"} 7",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} not in\n{metrics}");
    }
}

/// Where a gated flow writes, and how to read all of it back.
enum Target {
    Sqlite,
    Parquet,
    Postgres(PgScratch),
    Mysql(MyScratch),
}

impl Target {
    async fn store(&self, app: &TestApp) -> i64 {
        match self {
            Target::Sqlite => app.sqlite_store("wh", "wh.db").await,
            Target::Parquet => app.parquet_store("lake", "lake").await,
            Target::Postgres(pg) => app.postgres_store("pg", &pg.url).await,
            Target::Mysql(my) => app.mysql_store("my", &my.url).await,
        }
    }

    fn table(&self, name: &str) -> String {
        match self {
            Target::Postgres(pg) => pg.t(name),
            _ => name.to_string(),
        }
    }

    /// Every row of table `name`, as text, sorted.
    async fn rows(&self, app: &TestApp, name: &str) -> Vec<String> {
        let mut rows: Vec<String> = match self {
            Target::Sqlite => sqlite_rows(&app.file("wh.db"), &format!("SELECT * FROM {name}"))
                .await
                .into_iter()
                .map(|r| json!(r).to_string())
                .collect(),
            Target::Parquet => parquet_rows(&app.file("lake").join(name), "SELECT * FROM t")
                .await
                .into_iter()
                .map(|r| r.to_string())
                .collect(),
            Target::Postgres(pg) => pg
                .rows(&format!("SELECT * FROM {}", pg.t(name)))
                .await
                .into_iter()
                .map(|r| format!("{r:?}"))
                .collect(),
            Target::Mysql(my) => my
                .rows(&format!("SELECT * FROM {name}"))
                .await
                .into_iter()
                .map(|r| format!("{r:?}"))
                .collect(),
        };
        rows.sort();
        rows
    }
}

/// A flow publishes; the data turns dirty; the next flow's failing `error` check fails it and
/// leaves both of its targets exactly as they were, while a failing `warn` check beside it
/// would not have mattered.
async fn a_failing_error_check_publishes_nothing(target: Target) {
    let app = spawn_app().await;
    app.write_file(
        "raw/orders.csv",
        "order_id,customer_id,status,amount_cents,note\n1,10,placed,500,\n2,11,shipped,700,\n",
    );
    app.write_file("raw/customers.csv", CUSTOMERS);
    let raw = app.csv_store("raw", "raw").await;
    let store = target.store(&app).await;
    let outputs = json!([
        {"node": "stg_orders", "table": target.table("orders")},
        {"node": "dim_customers", "table": target.table("customers")}
    ]);
    let checks = json!([
        {"node": "stg_orders", "type": "unique", "columns": ["order_id"]},
        {"node": "stg_orders", "type": "accepted_values", "column": "status", "values": ["placed", "shipped"], "severity": "warn"},
        {"node": "dim_customers", "type": "not_null", "column": "name"}
    ]);
    let input = app.create_input(shop_input(raw, store, outputs, checks)).await;
    let first = app.start_flow(input).await;
    let first = app.wait_final(first).await;
    assert_eq!(state(&first), "COMPLETED", "{first:#}");
    let orders = target.rows(&app, "orders").await;
    let customers = target.rows(&app, "customers").await;
    assert_eq!(orders.len(), 2, "{orders:?}");
    assert_eq!(customers.len(), 3, "{customers:?}");

    write_dirty(&app);
    let second = app.start_flow(input).await;
    let second = app.wait_final(second).await;
    assert_eq!(state(&second), "FAILED", "{second:#}");
    assert_eq!(target.rows(&app, "orders").await, orders);
    assert_eq!(target.rows(&app, "customers").await, customers);

    let unique = check(&second, "unique(stg_orders.order_id)");
    assert_eq!(unique["state"], "FAILED");
    assert_eq!(unique["failing_rows"], 1);
    assert_eq!(task(&second, "unique(stg_orders.order_id)")["state"], "FAILED");
    assert_eq!(
        check(&second, "accepted_values(stg_orders.status)")["state"],
        "WARNED"
    );
    assert_eq!(check(&second, "not_null(dim_customers.name)")["state"], "PASSED");
    let errors: Vec<&str> = second["output"]["errors"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].ends_with(
            r#"ERROR [unique(stg_orders.order_id)] check unique(stg_orders.order_id) failed: 1 duplicated key of (order_id); first: {"count":2,"order_id":3}"#
        ),
        "{errors:#?}"
    );
    match target {
        Target::Postgres(pg) => {
            assert_eq!(pg.stage_tables().await, Vec::<String>::new());
            pg.drop().await;
        }
        Target::Mysql(my) => {
            assert_eq!(my.stage_tables().await, Vec::<String>::new());
            my.drop().await;
        }
        _ => {}
    }
}

#[tokio::test]
async fn a_failing_error_check_leaves_a_sqlite_target_as_it_was() {
    a_failing_error_check_publishes_nothing(Target::Sqlite).await;
}

#[tokio::test]
async fn a_failing_error_check_leaves_a_parquet_target_as_it_was() {
    a_failing_error_check_publishes_nothing(Target::Parquet).await;
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn a_failing_error_check_leaves_a_postgres_target_as_it_was() {
    let pg = PgScratch::new(&pg_url(), "checks").await;
    a_failing_error_check_publishes_nothing(Target::Postgres(pg)).await;
}

#[tokio::test]
#[cfg_attr(not(sluice_mysql), ignore = "SLUICE_TEST_MYSQL_URL is not set")]
async fn a_failing_error_check_leaves_a_mysql_target_as_it_was() {
    let my = MyScratch::new(&mysql_url(), "checks").await;
    a_failing_error_check_publishes_nothing(Target::Mysql(my)).await;
}

#[tokio::test]
async fn samples_hold_five_rows_and_an_unknown_column_fails_with_a_hint() {
    let app = spawn_app().await;
    let (raw, wh) = shop(&app).await;
    let mut body = input(raw, wh);
    body["transforms"] = json!([
        {"name": "stg_orders", "sql": "SELECT order_id, customer_id, lower(status) AS status, amount FROM orders"},
        {"name": "many", "sql": "SELECT value AS n, CAST(NULL AS BIGINT) AS maybe, repeat('x', 300) AS long_text FROM range(20)"}
    ]);
    body["checks"] = json!([
        {"node": "many", "type": "not_null", "columns": ["maybe"], "severity": "warn"},
        {"node": "stg_orders", "type": "not_null", "columns": ["customer_idd"]}
    ]);
    let created = app.post("/flow-inputs", &body).await.expect(201).body;
    // `many` is read by its check only: computed inside it, not kept.
    let many = created["dag"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "many")
        .unwrap();
    assert_eq!(many["materialize"], false);
    assert_eq!(many["why"], "inlined into not_null(many.maybe)");
    let flow = app.start_flow(created["id"].as_i64().unwrap()).await;
    let done = app.wait_final(flow).await;
    assert_eq!(state(&done), "FAILED", "{done:#}");

    let nulls = check(&done, "not_null(many.maybe)");
    assert_eq!(nulls["state"], "WARNED");
    assert_eq!(nulls["failing_rows"], 20);
    let sample = nulls["sample"].as_array().unwrap();
    assert_eq!(sample.len(), 5, "{nulls:#}");
    for row in sample {
        let text = row["long_text"].as_str().unwrap();
        assert_eq!(text, format!("{}…", "x".repeat(100)));
        assert_eq!(row["maybe"], Value::Null);
    }
    assert_eq!(task(&done, "many")["state"], "COMPLETED");

    let unknown = check(&done, "not_null(stg_orders.customer_idd)");
    assert_eq!(unknown["state"], "FAILED", "{unknown:#}");
    assert_eq!(unknown["failing_rows"], Value::Null);
    let message = unknown["message"].as_str().unwrap();
    assert!(
        message.contains(r#"unknown column "customer_idd" in stg_orders (did you mean "customer_id"?)"#),
        "{message}"
    );
    assert_eq!(tables(&app).await, Vec::<String>::new());
}

#[tokio::test]
async fn checks_are_validated_at_creation() {
    let app = spawn_app_with(AppOptions::default().env("SLUICE__LIMITS__MAX_CHECKS", 7)).await;
    let (raw, wh) = shop(&app).await;
    let mut body = input(raw, wh);
    body["checks"] = json!([
        {"node": "stg_ordrs", "type": "unique", "columns": ["order_id"]},
        {"node": "stg_orders", "type": "uniqe", "columns": ["order_id"]},
        {"node": "stg_orders", "type": "relationships", "column": "customer_id", "to": "custmers", "to_column": "id"},
        {"node": "stg_orders", "type": "query", "sql": "DELETE FROM stg_orders"},
        {"node": "stg_orders", "type": "expression", "sql": "SELECT 1"},
        {"node": "stg_orders", "type": "row_count", "min": -1},
        {"node": "stg_orders", "type": "not_null", "columns": ["a"], "severity": "info"},
        {"node": "stg_orders", "type": "not_null", "columns": ["a"]}
    ]);
    let r = assert_rejected(
        &app,
        "/flow-inputs",
        &body,
        &[
            ("checks", "at most 7 checks are allowed"),
            ("checks[0].node", "did you mean \"stg_orders\""),
            ("checks[1].type", "did you mean \"unique\""),
            ("checks[2].to", "unknown node \"custmers\""),
            ("checks[3].sql", "must be a query"),
            ("checks[4].sql", "expression"),
            ("checks[5].min", "out of range"),
            ("checks[6].severity", "use error or warn"),
            (
                "checks[7].name",
                "duplicate check name \"not_null(stg_orders.a)\"",
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 422);
}

#[tokio::test]
async fn output_contracts_name_every_difference_before_staging() {
    let app = spawn_app().await;
    write_dirty(&app);
    let raw = app.csv_store("raw", "raw").await;
    let wh = app.sqlite_store("wh", "wh.db").await;
    let app_ref = &app;
    let run = move |outputs: Value| {
        let app = app_ref;
        async move {
            let mut body = shop_input(raw, wh, outputs, json!([]));
            body["name"] = json!(format!("contract_{}", unique_suffix()));
            body["transforms"].as_array_mut().unwrap().push(json!(
                {"name": "fct", "sql": "SELECT order_id, CAST(amount_cents AS DOUBLE) AS amount_cents, note FROM stg_orders"}
            ));
            let input = app.create_input(body).await;
            let flow = app.start_flow(input).await;
            app.wait_final(flow).await
        }
    };
    // Wrong type, missing and unexpected columns: all named, nothing written.
    let done = run(json!([{"node": "fct", "table": "fct", "columns": [
        {"name": "order_id", "type": "bigint", "nullable": false},
        {"name": "amount_cents", "type": "bigint"},
        {"name": "order_ts", "type": "timestamp"}
    ]}]))
    .await;
    assert_eq!(state(&done), "FAILED", "{done:#}");
    let error = task(&done, "fct->fct")["error"].as_str().unwrap().to_string();
    assert_eq!(
        error,
        "the result of fct does not match the output's declared columns: column amount_cents: expected bigint, got double; missing column order_ts; unexpected column note"
    );
    assert!(done["output"]["errors"]["lines"][0]
        .as_str()
        .unwrap()
        .contains(&error));
    assert_eq!(tables(&app).await, Vec::<String>::new());

    // A NULL in a column declared nullable: false.
    let done = run(json!([{"node": "stg_orders", "table": "orders", "columns": [
        {"name": "order_id", "type": "bigint", "nullable": false},
        {"name": "customer_id", "type": "bigint", "nullable": false},
        {"name": "status", "type": "text"},
        {"name": "amount_cents", "type": "bigint"},
        {"name": "note", "type": "text"}
    ]}]))
    .await;
    assert_eq!(state(&done), "FAILED", "{done:#}");
    let error = task(&done, "stg_orders->orders")["error"].as_str().unwrap();
    assert!(
        error.contains("column customer_id is declared nullable: false, but the result has a NULL in it"),
        "{error}"
    );
    assert_eq!(tables(&app).await, Vec::<String>::new());

    // A result that keeps its contract is published.
    let done = run(json!([{"node": "fct", "table": "fct", "columns": [
        {"name": "order_id", "type": "bigint", "nullable": false},
        {"name": "amount_cents", "type": "double precision"},
        {"name": "note", "type": "text"}
    ]}]))
    .await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    assert_eq!(
        sqlite_rows(&app.file("wh.db"), "SELECT count(*) FROM fct").await,
        vec![vec![json!(6)]]
    );

    // Type names are checked at creation.
    let mut body = shop_input(
        raw,
        wh,
        json!([{"node": "stg_orders", "table": "orders", "columns": [
            {"name": "order_id", "type": "bigintt"},
            {"name": "order_id", "type": "decimal(50,2)"}
        ]}]),
        json!([]),
    );
    body["name"] = json!("bad_contract");
    assert_rejected(
        &app,
        "/flow-inputs",
        &body,
        &[
            ("outputs[0].columns[0].type", "did you mean \"bigint\""),
            ("outputs[0].columns[1].name", "declared twice"),
            ("outputs[0].columns[1].type", "precision of 1 to 38"),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_follower_sees_each_check_change() {
    let app = spawn_app_with(AppOptions::default().env("SLUICE__ENGINE__MAX_RUNNING_FLOWS", "1")).await;
    // A flow that holds the only slot, so the checked flow waits READY for its follower.
    let hold = app
        .create_input(json!({
            "name": "hold", "source_store_ids": [], "target_store_id": app.sqlite_store("h", "h.db").await,
            "transforms": [{"name": "hold", "sql": "SELECT count(*) AS n FROM range(300000) r1 CROSS JOIN range(300000) r2"}]
        }))
        .await;
    let hold = app.start_flow(hold).await;
    app.wait_flow(hold, std::time::Duration::from_secs(30), |f| {
        state(f) == "RUNNING"
    })
    .await;
    write_dirty(&app);
    let raw = app.csv_store("raw", "raw").await;
    let wh = app.sqlite_store("wh", "wh.db").await;
    let checks = json!([
        {"node": "stg_orders", "type": "unique", "columns": ["order_id"], "severity": "warn"},
        {"node": "clean_orders", "type": "unique", "columns": ["order_id"]}
    ]);
    let input = app
        .create_input(shop_input(raw, wh, json!([{"node": "clean_orders"}]), checks))
        .await;
    let flow = app.start_flow(input).await;
    let stream = crate::events::Stream::open(&app, flow).await;
    app.post(&format!("/flows/cancel/{hold}"), &json!({}))
        .await
        .expect(202);
    let events = stream.collect(std::time::Duration::from_secs(60)).await;
    let story = |name: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.name == "check" && e.data["name"] == name)
            .map(|e| e.data["state"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(events[0].data["output"]["checks"][0]["state"], "PENDING");
    assert_eq!(story("unique(stg_orders.order_id)"), ["RUNNING", "WARNED"]);
    assert_eq!(story("unique(clean_orders.order_id)"), ["RUNNING", "PASSED"]);
    let warned = events
        .iter()
        .find(|e| e.name == "check" && e.data["state"] == "WARNED")
        .unwrap();
    assert_eq!(warned.data["failing_rows"], 1);
    assert_eq!(warned.data["sample"], json!([{"order_id": 3, "count": 2}]));
    assert_eq!(events.last().unwrap().name, "end");
    assert_eq!(events.last().unwrap().data["state"], "COMPLETED");
}

#[tokio::test]
async fn the_cli_prints_the_checks_of_a_flow() {
    let app = spawn_app().await;
    write_dirty(&app);
    let raw = app.csv_store("raw", "raw").await;
    let wh = app.sqlite_store("wh", "wh.db").await;
    let checks = json!([
        {"node": "stg_orders", "type": "unique", "columns": ["order_id"], "severity": "warn"},
        {"node": "clean_orders", "type": "row_count", "min": 1}
    ]);
    let input = app
        .create_input(shop_input(raw, wh, json!([{"node": "clean_orders"}]), checks))
        .await;
    let sluice = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(args)
            .env("SLUICE_URL", &app.address)
            .env_remove("SLUICE_TOKEN")
            .kill_on_drop(true);
        cmd
    };
    let input = input.to_string();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        sluice(&["flows", "start", &input, "--follow"]).output(),
    )
    .await
    .expect("sluice flows start --follow finishes")
    .expect("run sluice");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    // Each verdict as it comes, then the checks at the end.
    assert!(
        stdout.contains("check WARNED   unique(stg_orders.order_id) [warn] 1 failing"),
        "{stdout}"
    );
    assert!(
        stdout.contains("check PASSED   row_count(clean_orders) [error]"),
        "{stdout}"
    );
    assert!(stdout.contains(r#"| {"count":2,"order_id":3}"#), "{stdout}");
    assert!(stdout.contains("checks:"), "{stdout}");

    let flow = app.get("/flows").await.expect(200).body["items"][0]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let out = sluice(&["flows", "get", &flow])
        .output()
        .await
        .expect("run sluice");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let at = stdout.find("  checks:").unwrap_or_else(|| panic!("{stdout}"));
    let section: Vec<&str> = stdout[at..].lines().skip(1).take(5).collect();
    assert_eq!(
        section[0], "    WARNED   unique(stg_orders.order_id) [warn] 1 failing",
        "{stdout}"
    );
    assert!(
        section[1].contains("check unique(stg_orders.order_id) failed: 1 duplicated key of (order_id)"),
        "{stdout}"
    );
    assert_eq!(section[2], r#"      | {"count":2,"order_id":3}"#, "{stdout}");
    assert_eq!(
        section[3], "    PASSED   row_count(clean_orders) [error]",
        "{stdout}"
    );

    // Following a flow that has ended prints each verdict once, from the snapshot.
    let out = sluice(&["flows", "follow", &flow])
        .output()
        .await
        .expect("run sluice");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(
        stdout
            .matches("check WARNED   unique(stg_orders.order_id) [warn] 1 failing")
            .count(),
        1,
        "{stdout}"
    );
    assert_eq!(
        stdout
            .matches("check PASSED   row_count(clean_orders) [error]")
            .count(),
        1,
        "{stdout}"
    );
}
