//! `/flow-inputs`: creation (201 + Location) with defaults filled in and the planned DAG, reads,
//! lists, and every validation rule as a 422 naming its field, all problems at once.

use reqwest::Method;
use serde_json::{json, Value};

use crate::contract::*;
use crate::helpers::*;

/// One store of each sort a flow input can use.
struct Stores {
    /// relational_db / sqlite
    shop: i64,
    /// file / csv
    raw: i64,
    /// file / parquet
    pq: i64,
    /// columnar_db / parquet
    lake: i64,
    /// relational_db / postgres (never connected to: validation needs no connection)
    pg: i64,
    /// file / csv, as a target
    csv_out: i64,
}

async fn stores(app: &TestApp) -> Stores {
    std::fs::create_dir_all(app.file("pq")).unwrap();
    Stores {
        shop: app.sqlite_store("shop", "db/shop.db").await,
        raw: app.csv_store("raw", "raw").await,
        pq: app
            .create_store(json!({"name": "pq", "kind": "file", "engine": "parquet",
                                 "connection": {"type": "file", "path": app.file("pq")}}))
            .await,
        lake: app.parquet_store("lake", "lake").await,
        pg: app
            .create_store(
                json!({"name": "pg", "kind": "relational_db", "engine": "postgres",
                                 "connection": {"type": "db", "host": "127.0.0.1", "user": "u",
                                                "password": "pw", "db_name": "d"}}),
            )
            .await,
        csv_out: app.csv_store("csv_out", "out").await,
    }
}

/// A valid request: two sources (a table, a csv file), two transforms, outputs by default.
fn base(s: &Stores) -> Value {
    json!({
        "name": "base",
        "source_store_ids": [s.shop, s.raw],
        "target_store_id": s.lake,
        "sources": [
            {"name": "orders", "store_id": s.shop, "table": "orders"},
            {"name": "customers", "store_id": s.raw, "path": "customers.csv"}
        ],
        "transforms": [
            {"name": "stg_orders", "sql": "SELECT id, customer_id FROM orders"},
            {"name": "totals", "sql": "SELECT c.id, count(*) AS n FROM customers c JOIN stg_orders o ON o.customer_id = c.id GROUP BY c.id"}
        ]
    })
}

fn with(mut body: Value, change: impl FnOnce(&mut Value)) -> Value {
    change(&mut body);
    body
}

async fn rejects(app: &TestApp, body: Value, expected: &[(&str, &str)]) -> Reply {
    assert_rejected(app, "/flow-inputs", &body, expected).await
}

/// Asserts that `order` lists every node once, each after everything it depends on.
#[track_caller]
fn assert_topological(dag: &Value) {
    let order: Vec<&str> = dag["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let nodes = dag["nodes"].as_array().unwrap();
    assert_eq!(order.len(), nodes.len(), "{dag:#}");
    for node in nodes {
        if node["kind"] == "persist" {
            assert_keys(node, &["name", "kind", "depends_on"]);
        } else {
            // Ingest and transform nodes say whether they are checkpointed, and why.
            assert_keys(node, &["name", "kind", "depends_on", "materialize", "why"]);
        }
        let at = order
            .iter()
            .position(|n| *n == node["name"])
            .expect("node in order");
        for dep in node["depends_on"].as_array().unwrap() {
            let dep_at = order.iter().position(|n| *n == dep).expect("dependency in order");
            assert!(dep_at < at, "{dep} after {}: {dag:#}", node["name"]);
        }
    }
}

#[tokio::test]
async fn the_api_example_is_created_with_defaults_filled_in_and_its_dag_planned() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    let request = json!({
        "name": "shop_marts",
        "source_store_ids": [s.shop, s.raw],
        "target_store_id": s.lake,
        "sources": [
            {"name": "orders",    "store_id": s.shop, "table": "main.orders"},
            {"name": "big_pays",  "store_id": s.shop, "query": "SELECT * FROM payments WHERE amount > 100"},
            {"name": "customers", "store_id": s.raw, "path": "customers.csv",
             "csv": {"delimiter": ";", "has_header": true, "null_values": ["", "NULL"]}}
        ],
        "transforms": [
            {"name": "stg_orders", "sql": "SELECT id, customer_id, lower(status) AS status FROM orders"},
            {"name": "customer_totals", "sql": "SELECT c.id, count(*) AS n FROM customers c JOIN stg_orders o ON o.customer_id = c.id GROUP BY c.id"}
        ],
        "outputs": [{"node": "customer_totals", "table": "analytics.customer_totals", "mode": "replace"}],
        "options": {"max_parallel_tasks": 4, "fail_fast": false, "task_timeout_s": 3600,
                    "max_attempts": 3, "memory_limit_mb": 1024}
    });
    let created = app.post("/flow-inputs", &request).await.expect(201);
    let id = created.id();
    assert_eq!(
        header(&created, "location"),
        format!("/api/v1.0/flow-inputs/{id}")
    );
    assert!(header(&created, "content-type").starts_with("application/json"));
    assert_timestamp(&created.body["created_utc"]);
    let persist = "customer_totals->analytics.customer_totals";
    let expected = json!({
        "id": id,
        "created_utc": created.body["created_utc"],
        "name": "shop_marts",
        "source_store_ids": [s.shop, s.raw],
        "target_store_id": s.lake,
        "sources": [
            {"name": "orders", "store_id": s.shop, "table": "main.orders"},
            {"name": "big_pays", "store_id": s.shop, "query": "SELECT * FROM payments WHERE amount > 100"},
            {"name": "customers", "store_id": s.raw, "path": "customers.csv",
             "csv": {"delimiter": ";", "has_header": true, "quote": "\"", "null_values": ["", "NULL"],
                     "infer_rows": 1000}}
        ],
        "transforms": request["transforms"],
        "outputs": [{"node": "customer_totals", "table": "analytics.customer_totals", "mode": "replace"}],
        "options": {"max_parallel_tasks": 4, "fail_fast": false, "task_timeout_s": 3600,
                    "max_attempts": 3, "memory_limit_mb": 1024},
        "dag": {
            "nodes": [
                {"name": "orders", "kind": "ingest", "depends_on": [],
                 "materialize": false, "why": "inlined into stg_orders"},
                {"name": "big_pays", "kind": "ingest", "depends_on": [],
                 "materialize": false, "why": "read by nothing: run once, its result is not kept"},
                {"name": "customers", "kind": "ingest", "depends_on": [],
                 "materialize": false, "why": "inlined into customer_totals"},
                {"name": "stg_orders", "kind": "transform", "depends_on": ["orders"],
                 "materialize": false, "why": "inlined into customer_totals"},
                {"name": "customer_totals", "kind": "transform", "depends_on": ["customers", "stg_orders"],
                 "materialize": false, "why": format!("streamed into its output ({persist})")},
                {"name": persist, "kind": "persist", "depends_on": ["customer_totals"]}
            ],
            "order": ["orders", "big_pays", "customers", "stg_orders", "customer_totals", persist]
        }
    });
    assert_eq!(created.body, expected);
    assert_topological(&created.body["dag"]);

    // GET equals the creation response, through the Location too.
    let location = header(&created, "location").to_string();
    let fetched = send(
        &app,
        Method::GET,
        &format!("{}{location}", app.address),
        None,
        None,
    )
    .await
    .expect(200);
    assert_eq!(fetched.body, created.body);
}

#[tokio::test]
async fn omitted_options_csv_options_and_outputs_get_their_defaults() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    let request = json!({
        "name": "defaults",
        "source_store_ids": [s.shop, s.raw, s.pq, s.lake],
        "target_store_id": s.csv_out,
        "sources": [
            {"name": "orders", "store_id": s.shop, "table": "orders"},
            {"name": "customers", "store_id": s.raw, "path": "c/*.csv"},
            {"name": "events", "store_id": s.pq, "path": "events/*.parquet"},
            {"name": "facts", "store_id": s.lake, "table": "facts"},
            {"name": "whole_dir", "store_id": s.raw}
        ],
        "transforms": [
            {"name": "a", "sql": "WITH o AS (SELECT * FROM orders) SELECT * FROM o JOIN customers USING (id)"},
            {"name": "b", "sql": "SELECT * FROM a WHERE id IN (SELECT id FROM events)"},
            {"name": "c", "sql": "SELECT count(*) AS n FROM a"},
            {"name": "d", "sql": "SELECT * FROM range(10)"},
            {"name": "e", "sql": "VALUES (1, 'x'), (2, 'y')"},
            {"name": "f", "sql": "select * from FACTS; "}
        ]
    });
    let created = app.post("/flow-inputs", &request).await.expect(201);
    let b = &created.body;
    assert_keys(
        b,
        &[
            "id",
            "created_utc",
            "name",
            "source_store_ids",
            "target_store_id",
            "sources",
            "transforms",
            "outputs",
            "options",
            "dag",
        ],
    );
    assert_eq!(
        b["options"],
        json!({"max_parallel_tasks": 4, "fail_fast": false, "task_timeout_s": 3600,
               "max_attempts": 3, "memory_limit_mb": 2048})
    );
    // CSV defaults only on the csv store's sources; nothing invented elsewhere.
    let csv_defaults = json!({"delimiter": ",", "has_header": true, "quote": "\"",
                              "null_values": [""], "infer_rows": 1000});
    assert_eq!(
        b["sources"][0],
        json!({"name": "orders", "store_id": s.shop, "table": "orders"})
    );
    assert_eq!(
        b["sources"][1],
        json!({"name": "customers", "store_id": s.raw, "path": "c/*.csv", "csv": csv_defaults})
    );
    assert_eq!(
        b["sources"][2],
        json!({"name": "events", "store_id": s.pq, "path": "events/*.parquet"})
    );
    assert_eq!(
        b["sources"][3],
        json!({"name": "facts", "store_id": s.lake, "table": "facts"})
    );
    assert_eq!(
        b["sources"][4],
        json!({"name": "whole_dir", "store_id": s.raw, "csv": csv_defaults})
    );
    // Every transform no other transform reads is persisted under its own name, replaced.
    assert_eq!(
        b["outputs"],
        json!([
            {"node": "b", "table": "b", "mode": "replace"},
            {"node": "c", "table": "c", "mode": "replace"},
            {"node": "d", "table": "d", "mode": "replace"},
            {"node": "e", "table": "e", "mode": "replace"},
            {"node": "f", "table": "f", "mode": "replace"}
        ])
    );
    let deps = |name: &str| {
        b["dag"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("no node {name}"))["depends_on"]
            .clone()
    };
    // CTE names and table functions are not dependencies; subqueries are.
    assert_eq!(deps("a"), json!(["orders", "customers"]));
    assert_eq!(deps("b"), json!(["a", "events"]));
    assert_eq!(deps("d"), json!([]));
    assert_eq!(deps("e"), json!([]));
    assert_eq!(deps("f"), json!(["facts"]));
    assert_eq!(deps("b->b"), json!(["b"]));
    let kinds: Vec<&str> = b["dag"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    let mut want = vec!["ingest"; 5];
    want.extend(["transform"; 6]);
    want.extend(["persist"; 5]);
    assert_eq!(kinds, want);
    assert_topological(&b["dag"]);
    assert_eq!(
        app.get(&format!("/flow-inputs/{}", created.id()))
            .await
            .expect(200)
            .body,
        created.body
    );

    // Sources may be persisted directly; modes and tables are kept as given.
    let r = app
        .post(
            "/flow-inputs",
            &json!({"name": "copy", "source_store_ids": [s.raw], "target_store_id": s.shop,
                    "sources": [{"name": "raw_rows", "store_id": s.raw, "path": "x.csv",
                                 "csv": {"delimiter": "\t", "quote": "'", "escape": "\\",
                                         "has_header": false, "null_values": [], "infer_rows": 1,
                                         "columns": {"amount": "decimal(10,2)", "day": "date"}}}],
                    "outputs": [{"node": "raw_rows", "mode": "append"},
                                {"node": "raw_rows", "table": "main.copy2"}]}),
        )
        .await
        .expect(201);
    assert_eq!(
        r.body["sources"][0]["csv"],
        json!({"delimiter": "\t", "quote": "'", "escape": "\\", "has_header": false,
               "null_values": [], "infer_rows": 1,
               "columns": {"amount": "decimal(10,2)", "day": "date"}})
    );
    assert_eq!(
        r.body["outputs"],
        json!([{"node": "raw_rows", "table": "raw_rows", "mode": "append"},
               {"node": "raw_rows", "table": "main.copy2", "mode": "replace"}])
    );
    assert_eq!(r.body["transforms"], json!([]));
    assert_eq!(
        r.body["dag"]["order"],
        json!(["raw_rows", "raw_rows->raw_rows", "raw_rows->main.copy2"])
    );
}

#[tokio::test]
async fn option_bounds_are_accepted_and_echoed() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    for options in [
        json!({"max_parallel_tasks": 1, "fail_fast": true, "task_timeout_s": 1, "flow_timeout_s": 1,
               "max_attempts": 1, "memory_limit_mb": 16}),
        json!({"max_parallel_tasks": 64, "fail_fast": false, "task_timeout_s": 604800,
               "flow_timeout_s": 2592000, "max_attempts": 10, "memory_limit_mb": 2048}),
    ] {
        let r = app
            .post(
                "/flow-inputs",
                &with(base(&s), |b| b["options"] = options.clone()),
            )
            .await
            .expect(201);
        assert_eq!(r.body["options"], options);
    }
    // Only some options: the rest are defaults.
    let r = app
        .post(
            "/flow-inputs",
            &with(base(&s), |b| b["options"] = json!({"fail_fast": true})),
        )
        .await
        .expect(201);
    assert_eq!(
        r.body["options"],
        json!({"max_parallel_tasks": 4, "fail_fast": true, "task_timeout_s": 3600,
               "max_attempts": 3, "memory_limit_mb": 2048})
    );
}

#[tokio::test]
async fn the_default_parallelism_and_memory_follow_the_configuration() {
    let app = spawn_app_with(
        AppOptions::default()
            .env("SLUICE__ENGINE__MAX_PARALLEL_TASKS", 3)
            .env("SLUICE__ENGINE__MEMORY_LIMIT_MB", 512),
    )
    .await;
    let s = stores(&app).await;
    let r = app.post("/flow-inputs", &base(&s)).await.expect(201);
    assert_eq!(r.body["options"]["max_parallel_tasks"], 3);
    assert_eq!(r.body["options"]["memory_limit_mb"], 512);
    rejects(
        &app,
        with(base(&s), |b| b["options"] = json!({"memory_limit_mb": 513})),
        &[("options.memory_limit_mb", "513 is out of range: use 16 to 512")],
    )
    .await;
}

#[tokio::test]
async fn lists_hold_summaries_newest_first_with_keyset_paging() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    assert_eq!(
        app.get("/flow-inputs").await.expect(200).body,
        json!({"items": [], "next_before_id": null})
    );
    let mut created = Vec::new();
    for i in 0..23 {
        created.push(
            app.create_input(with(base(&s), |b| b["name"] = json!(format!("in-{i}"))))
                .await,
        );
    }
    created.reverse();
    let list = app.get("/flow-inputs").await.expect(200);
    assert_eq!(ids(&list.body), created);
    assert!(list.body["next_before_id"].is_null());
    let item = &list.body["items"][0];
    assert_keys(
        item,
        &[
            "id",
            "created_utc",
            "name",
            "source_store_ids",
            "target_store_id",
            "source_count",
            "transform_count",
            "output_count",
        ],
    );
    assert_timestamp(&item["created_utc"]);
    let full = app
        .get(&format!("/flow-inputs/{}", created[0]))
        .await
        .expect(200)
        .body;
    assert_eq!(
        *item,
        json!({"id": created[0], "created_utc": full["created_utc"], "name": "in-22",
               "source_store_ids": [s.shop, s.raw], "target_store_id": s.lake,
               "source_count": 2, "transform_count": 2, "output_count": 1})
    );
    for limit in [1, 5, 22, 23, 50] {
        assert_eq!(
            walk(&app, "/flow-inputs", "", limit).await,
            created,
            "limit {limit}"
        );
    }
    let page = app
        .get(&format!("/flow-inputs?limit=2&before_id={}", created[3]))
        .await
        .expect(200);
    assert_eq!(ids(&page.body), created[4..6]);
    assert_eq!(page.body["next_before_id"], created[5]);
    for bad in ["0", "501"] {
        assert_invalid(&app.get(&format!("/flow-inputs?limit={bad}")).await, &["limit"]);
    }
    for bad in ["limit=abc", "before_id=abc", "limit=-1", "page=2"] {
        assert_problem(&app.get(&format!("/flow-inputs?{bad}")).await, 400);
    }
}

#[tokio::test]
async fn unknown_and_non_numeric_ids_are_404_problems() {
    let app = spawn_app().await;
    for path in [
        "/flow-inputs/1",
        "/flow-inputs/424242",
        "/flow-inputs/abc",
        "/flow-inputs/1e3",
        "/flow-inputs/1/dag",
    ] {
        let r = app.get(path).await;
        assert_problem(&r, 404);
    }
    let r = app.get("/flow-inputs/424242").await;
    assert!(
        r.body["detail"].as_str().unwrap().contains("flow input 424242"),
        "{:#}",
        r.body
    );
}

#[tokio::test]
async fn malformed_bodies_and_wrong_types_are_400_with_the_field_path() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    let r = post_text(
        &app,
        "/flow-inputs",
        "{\n  \"name\": \"x\",\n  \"sources\": [\n    {\"name\": \"a\" \"store_id\": 1}\n  ]\n}",
    )
    .await;
    assert_problem(&r, 400);
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains("malformed JSON at line 4, column 18"), "{detail}");

    for (change, path) in [
        (json!({"options": {"max_attempts": "3"}}), "options.max_attempts"),
        (json!({"options": {"max_attempts": -1}}), "options.max_attempts"),
        (
            json!({"options": {"max_parallel_tasks": 1.5}}),
            "options.max_parallel_tasks",
        ),
        (json!({"options": {"fail_fast": "yes"}}), "options.fail_fast"),
        (json!({"options": []}), "options"),
        (json!({"source_store_ids": "1"}), "source_store_ids"),
        (json!({"source_store_ids": [1, "2"]}), "source_store_ids[1]"),
        (json!({"target_store_id": null}), "target_store_id"),
        (
            json!({"transforms": {"name": "t", "sql": "SELECT 1"}}),
            "transforms",
        ),
        (
            json!({"transforms": [{"name": "t", "sql": 1}]}),
            "transforms[0].sql",
        ),
        (json!({"outputs": [{"node": 1}]}), "outputs[0].node"),
        (json!({"name": ["x"]}), "name"),
    ] {
        let mut body = base(&s);
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = app.post("/flow-inputs", &body).await;
        assert_problem(&r, 400);
        assert_eq!(r.error_paths(), [path], "{change}: {:#}", r.body);
        assert!(r.body["detail"].as_str().unwrap().contains(path), "{:#}", r.body);
    }
    let r = app
        .post(
            "/flow-inputs",
            &with(base(&s), |b| {
                b["sources"][1]["csv"] = json!({"has_header": "yes"})
            }),
        )
        .await;
    assert_problem(&r, 400);
    assert_eq!(r.error_paths(), ["sources[1].csv.has_header"]);
    let r = app
        .post(
            "/flow-inputs",
            &with(base(&s), |b| b["sources"][0]["store_id"] = json!("1")),
        )
        .await;
    assert_problem(&r, 400);
    assert_eq!(r.error_paths(), ["sources[0].store_id"]);

    // Unknown fields: a typo is never silently ignored.
    for (change, field) in [
        (with(base(&s), |b| b["sorces"] = b["sources"].clone()), "sorces"),
        (with(base(&s), |b| b["sources"][0]["tabel"] = json!("x")), "tabel"),
        (
            with(base(&s), |b| b["options"] = json!({"retries": 3})),
            "retries",
        ),
        (
            with(base(&s), |b| b["transforms"][0]["depends_on"] = json!(["orders"])),
            "depends_on",
        ),
        (
            with(base(&s), |b| {
                b["outputs"] = json!([{"node": "totals", "format": "csv"}])
            }),
            "format",
        ),
        (
            with(base(&s), |b| b["sources"][1]["csv"] = json!({"separator": ";"})),
            "separator",
        ),
    ] {
        let r = app.post("/flow-inputs", &change).await;
        assert_problem(&r, 400);
        let detail = r.body["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("unknown field `{field}`")), "{detail}");
    }

    // Missing required fields.
    for field in ["name", "source_store_ids", "target_store_id"] {
        let r = app
            .post(
                "/flow-inputs",
                &with(base(&s), |b| {
                    b.as_object_mut().unwrap().remove(field);
                }),
            )
            .await;
        assert_problem(&r, 400);
        assert!(
            r.body["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("missing field `{field}`")),
            "{:#}",
            r.body
        );
    }

    for text in ["", " ", "[1]"] {
        assert_problem(&post_text(&app, "/flow-inputs", text).await, 400);
    }
    let r = send(
        &app,
        Method::POST,
        &app.api("/flow-inputs"),
        Some("text/csv"),
        Some(base(&s).to_string().into_bytes()),
    )
    .await;
    assert_problem(&r, 400);
    assert_eq!(ids(&app.get("/flow-inputs").await.body), Vec::<i64>::new());
}

#[tokio::test]
async fn store_ids_must_exist_be_listed_once_and_fit_their_use() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    let (shop, raw) = (s.shop, s.raw);
    rejects(
        &app,
        with(base(&s), |b| b["name"] = json!("1x")),
        &[("name", "invalid name \"1x\"")],
    )
    .await;
    rejects(
        &app,
        with(base(&s), |b| b["source_store_ids"] = json!([shop, raw, 999999])),
        &[("source_store_ids[2]", "data store 999999 does not exist")],
    )
    .await;
    rejects(
        &app,
        with(base(&s), |b| b["source_store_ids"] = json!([shop, raw, shop])),
        &[(
            "source_store_ids[2]",
            &format!("data store {shop} is listed twice"),
        )],
    )
    .await;
    rejects(
        &app,
        with(base(&s), |b| b["target_store_id"] = json!(888888)),
        &[("target_store_id", "data store 888888 does not exist")],
    )
    .await;
    rejects(
        &app,
        with(base(&s), |b| b["source_store_ids"] = json!([shop])),
        &[(
            "sources[1].store_id",
            &format!("data store {raw} is not listed in source_store_ids"),
        )],
    )
    .await;
    rejects(
        &app,
        with(base(&s), |b| b["sources"][1]["store_id"] = json!(777777)),
        &[
            (
                "sources[1].store_id",
                "data store 777777 is not listed in source_store_ids",
            ),
            ("sources[1].store_id", "data store 777777 does not exist"),
        ],
    )
    .await;
    // An unknown id that is listed is reported once, where it is listed.
    rejects(
        &app,
        with(base(&s), |b| {
            b["source_store_ids"] = json!([shop, 777777]);
            b["sources"][1]["store_id"] = json!(777777);
        }),
        &[("source_store_ids[1]", "data store 777777 does not exist")],
    )
    .await;
}

#[tokio::test]
async fn sources_must_read_what_their_store_offers() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    let all = json!([s.shop, s.raw, s.pq, s.lake]);
    let one = |source: Value| {
        let all = all.clone();
        with(base(&s), move |b| {
            b["source_store_ids"] = all;
            b["sources"] = json!([source]);
            b["transforms"] = json!([]);
            b["outputs"] = json!([{"node": "src"}]);
        })
    };
    let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
        (
            json!({"name": "src", "store_id": s.shop, "path": "x.csv"}),
            vec![(
                "sources[0].path",
                "store shop is a relational_db store: read a table or a query",
            )],
        ),
        (
            json!({"name": "src", "store_id": s.lake, "path": "facts"}),
            vec![("sources[0].path", "store lake is a columnar_db store")],
        ),
        (
            json!({"name": "src", "store_id": s.shop}),
            vec![("sources[0].table", "give a table or a query")],
        ),
        (
            json!({"name": "src", "store_id": s.shop, "table": "t", "query": "SELECT 1"}),
            vec![(
                "sources[0].query",
                "give only one of table, query or path (found table and query)",
            )],
        ),
        (
            json!({"name": "src", "store_id": s.raw, "table": "t"}),
            vec![("sources[0].table", "store raw is a file store: read a path")],
        ),
        (
            json!({"name": "src", "store_id": s.pq, "query": "SELECT 1"}),
            vec![("sources[0].query", "store pq is a file store")],
        ),
        (
            json!({"name": "src", "store_id": s.shop, "table": "t", "csv": {}}),
            vec![(
                "sources[0].csv",
                "csv options apply to csv file stores, not to sqlite",
            )],
        ),
        (
            json!({"name": "src", "store_id": s.pq, "path": "a.parquet", "csv": {"delimiter": ";"}}),
            vec![(
                "sources[0].csv",
                "csv options apply to csv stores, not to parquet",
            )],
        ),
        (
            json!({"name": "src", "store_id": s.shop, "table": "1bad"}),
            vec![("sources[0].table", "invalid table name \"1bad\"")],
        ),
        (
            json!({"name": "src", "store_id": s.shop, "table": "a.b.c.d"}),
            vec![("sources[0].table", "invalid table name")],
        ),
        (
            json!({"name": "src", "store_id": s.shop, "table": "orders; DROP TABLE x"}),
            vec![("sources[0].table", "invalid table name")],
        ),
        (
            json!({"name": "src", "store_id": s.shop, "query": "  "}),
            vec![("sources[0].query", "must not be empty")],
        ),
        (
            json!({"name": "src", "store_id": s.shop, "query": format!("SELECT 1{}", " ".repeat(100_000))}),
            vec![("sources[0].query", "at most 100000 characters")],
        ),
        (
            json!({"name": "src", "store_id": s.raw, "path": "/etc/passwd"}),
            vec![("sources[0].path", "must be relative to the store's path")],
        ),
        (
            json!({"name": "src", "store_id": s.raw, "path": "~/x.csv"}),
            vec![("sources[0].path", "must be relative")],
        ),
        (
            json!({"name": "src", "store_id": s.raw, "path": "../db/shop.db"}),
            vec![("sources[0].path", "may not contain '..'")],
        ),
        (
            json!({"name": "src", "store_id": s.raw, "path": "a/../../x.csv"}),
            vec![("sources[0].path", "may not contain '..'")],
        ),
        (
            json!({"name": "src", "store_id": s.raw, "path": ""}),
            vec![("sources[0].path", "must not be empty")],
        ),
        (
            json!({"name": "src", "store_id": s.raw, "path": "a/[b.csv"}),
            vec![("sources[0].path", "is not a valid glob")],
        ),
    ];
    for (source, expected) in cases {
        rejects(&app, one(source), &expected).await;
    }
}

#[tokio::test]
async fn csv_options_are_checked_one_by_one() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    let csv = |options: Value| with(base(&s), |b| b["sources"][1]["csv"] = options);
    let cases: Vec<(Value, Vec<(&str, &str)>)> = vec![
        (
            json!({"delimiter": ";;"}),
            vec![(
                "sources[1].csv.delimiter",
                "must be one ASCII character, not \";;\"",
            )],
        ),
        (
            json!({"delimiter": ""}),
            vec![("sources[1].csv.delimiter", "one ASCII character")],
        ),
        (
            json!({"delimiter": "§"}),
            vec![("sources[1].csv.delimiter", "one ASCII character")],
        ),
        (
            json!({"quote": "''"}),
            vec![("sources[1].csv.quote", "one ASCII character")],
        ),
        (
            json!({"escape": "\\\\"}),
            vec![("sources[1].csv.escape", "one ASCII character")],
        ),
        (
            json!({"infer_rows": 0}),
            vec![("sources[1].csv.infer_rows", "between 1 and 1000000")],
        ),
        (
            json!({"infer_rows": 1_000_001}),
            vec![("sources[1].csv.infer_rows", "between 1 and 1000000")],
        ),
        (
            json!({"columns": {"n": "money", "m": "decimal(50,2)", "ok": "int"}}),
            vec![
                ("sources[1].csv.columns.m", "precision must be 1-38"),
                ("sources[1].csv.columns.n", "unknown column type \"money\""),
            ],
        ),
        (
            json!({"delimiter": "ab", "quote": "", "infer_rows": 0}),
            vec![
                ("sources[1].csv.delimiter", "one ASCII"),
                ("sources[1].csv.quote", "one ASCII"),
                ("sources[1].csv.infer_rows", "between"),
            ],
        ),
    ];
    for (options, expected) in cases {
        rejects(&app, csv(options), &expected).await;
    }
}

#[tokio::test]
async fn node_names_must_be_valid_and_unique_across_sources_and_transforms() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    rejects(
        &app,
        with(base(&s), |b| b["transforms"][0]["name"] = json!("customers")),
        &[
            (
                "transforms[0].name",
                "duplicate name \"customers\": already used by sources[1]",
            ),
            // `totals` still reads `stg_orders`, which no longer exists.
            ("transforms[1].sql", "unknown table \"stg_orders\""),
        ],
    )
    .await;
    rejects(
        &app,
        with(base(&s), |b| {
            b["sources"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "orders", "store_id": s.shop, "table": "t"}));
        }),
        &[(
            "sources[2].name",
            "duplicate name \"orders\": already used by sources[0]",
        )],
    )
    .await;
    rejects(
        &app,
        with(base(&s), |b| {
            b["transforms"][1]["name"] = json!("stg_orders");
            b["transforms"][1]["sql"] = json!("SELECT 1 AS x");
        }),
        &[(
            "transforms[1].name",
            "duplicate name \"stg_orders\": already used by transforms[0]",
        )],
    )
    .await;
    for (bad, hint) in [
        ("Orders", "(try \"orders\")"),
        ("stg-orders", "(try \"stg_orders\")"),
        ("9lives", "(try \"_9lives\")"),
        ("has space", "(try \"has_space\")"),
        ("", "1-63 lowercase letters"),
    ] {
        let r = rejects(
            &app,
            with(base(&s), |b| {
                b["transforms"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": bad, "sql": "SELECT 1"}));
                b["outputs"] = json!([{"node": "totals"}]);
            }),
            &[("transforms[2].name", &format!("invalid name {bad:?}"))],
        )
        .await;
        assert_message(&r, "transforms[2].name", &[hint]);
    }
    rejects(
        &app,
        with(base(&s), |b| {
            b["sources"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "x".repeat(64), "store_id": s.shop, "table": "t"}));
        }),
        &[("sources[2].name", "invalid name")],
    )
    .await;
    // 63 characters is fine.
    app.post(
        "/flow-inputs",
        &with(base(&s), |b| {
            b["sources"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "x".repeat(63), "store_id": s.shop, "table": "t"}));
        }),
    )
    .await
    .expect(201);
}

#[tokio::test]
async fn transform_sql_must_be_one_parseable_query() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    let sql = |text: &str| with(base(&s), |b| b["transforms"][1]["sql"] = json!(text));
    // Syntax errors carry their position.
    let r = rejects(
        &app,
        sql("SELECT id\n  FROM orders WHERE = 1"),
        &[("transforms[1].sql", "syntax error")],
    )
    .await;
    assert_message(&r, "transforms[1].sql", &["(at line 2, column 21)"]);
    let r = rejects(&app, sql("SELEC 1"), &[("transforms[1].sql", "syntax error")]).await;
    assert_message(&r, "transforms[1].sql", &["line 1, column 1"]);
    // Text that ends too early: the position is its end.
    let r = rejects(&app, sql("SELECT (1"), &[("transforms[1].sql", "syntax error")]).await;
    assert_message(&r, "transforms[1].sql", &["(at line 1, column 10)"]);
    let r = rejects(
        &app,
        sql("SELECT *\n  FROM orders\n  WHERE"),
        &[("transforms[1].sql", "syntax error")],
    )
    .await;
    assert_message(&r, "transforms[1].sql", &["(at line 3, column 8)"]);
    assert!(
        !message_at(&r, "transforms[1].sql").contains("ParserError"),
        "{:#}",
        r.body
    );

    for (text, kind) in [
        ("INSERT INTO orders VALUES (1)", "INSERT"),
        ("UPDATE orders SET id = 1", "UPDATE"),
        ("DELETE FROM orders", "DELETE"),
        ("CREATE TABLE t (a INT)", "CREATE TABLE"),
        ("CREATE TABLE t AS SELECT * FROM orders", "CREATE TABLE"),
        ("CREATE VIEW v AS SELECT * FROM orders", "CREATE VIEW"),
        ("DROP TABLE orders", "DROP"),
        ("COPY orders TO '/tmp/x.csv'", "COPY"),
        (
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "CREATE EXTERNAL TABLE",
        ),
        ("EXPLAIN SELECT * FROM orders", "EXPLAIN"),
        ("SET datafusion.execution.batch_size = 1", "SET"),
    ] {
        rejects(
            &app,
            sql(text),
            &[(
                "transforms[1].sql",
                &format!("a transform must be a query (SELECT, WITH or VALUES), not {kind}"),
            )],
        )
        .await;
    }
    for text in ["SELECT 1; SELECT 2", "SELECT * FROM orders; DROP TABLE orders"] {
        rejects(
            &app,
            sql(text),
            &[("transforms[1].sql", "only one statement is allowed")],
        )
        .await;
    }
    for text in ["", "   ", ";"] {
        let r = app.post("/flow-inputs", &sql(text)).await;
        assert_problem(&r, 422);
        assert_eq!(r.error_paths(), ["transforms[1].sql"], "{text:?}: {:#}", r.body);
    }
    rejects(&app, sql(""), &[("transforms[1].sql", "the SQL is empty")]).await;
    // Table functions that could read files are refused.
    rejects(
        &app,
        sql("SELECT * FROM read_csv('/etc/passwd')"),
        &[("transforms[1].sql", "unknown table function read_csv")],
    )
    .await;
}

#[tokio::test]
async fn references_must_name_sources_or_transforms() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    let sql = |text: &str| with(base(&s), |b| b["transforms"][1]["sql"] = json!(text));
    rejects(
        &app,
        sql("SELECT * FROM ordrs"),
        &[("transforms[1].sql",
           "unknown table \"ordrs\" (at line 1, column 15) (did you mean \"orders\"?); a transform can read the flow's sources and transforms")],
    )
    .await;
    rejects(
        &app,
        sql("SELECT *\nFROM stg_orders\nJOIN custmers USING (id)"),
        &[(
            "transforms[1].sql",
            "unknown table \"custmers\" (at line 3, column 6) (did you mean \"customers\"?)",
        )],
    )
    .await;
    let r = rejects(
        &app,
        sql("SELECT * FROM zebra"),
        &[("transforms[1].sql", "unknown table \"zebra\"")],
    )
    .await;
    assert!(
        !message_at(&r, "transforms[1].sql").contains("did you mean"),
        "{:#}",
        r.body
    );
    rejects(
        &app,
        sql("SELECT * FROM \"Orders\""),
        &[(
            "transforms[1].sql",
            "unknown table \"Orders\" (at line 1, column 15) (did you mean \"orders\"?)",
        )],
    )
    .await;
    // Every unknown table of one query is reported.
    rejects(
        &app,
        sql("SELECT * FROM a1 JOIN orders USING (id) JOIN b2 USING (id)"),
        &[
            ("transforms[1].sql", "unknown table \"a1\""),
            ("transforms[1].sql", "unknown table \"b2\""),
        ],
    )
    .await;
    for (text, name) in [
        ("SELECT * FROM public.orders", "public.orders"),
        ("SELECT * FROM main.stg_orders", "main.stg_orders"),
        (
            "SELECT * FROM datafusion.public.customers",
            "datafusion.public.customers",
        ),
    ] {
        rejects(
            &app,
            sql(text),
            &[("transforms[1].sql",
               &format!("table \"{name}\" (at line 1, column 15): transforms read sources and other transforms by their plain name"))],
        )
        .await;
    }
    // A CTE shadows nothing outside its query; unquoted names are case-insensitive.
    app.post(
        "/flow-inputs",
        &sql("WITH x AS (SELECT * FROM ORDERS) SELECT * FROM x JOIN Stg_Orders USING (id)"),
    )
    .await
    .expect(201);
}

#[tokio::test]
async fn cycles_are_refused_with_their_path() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    let transforms = |t: Value| with(base(&s), |b| b["transforms"] = t);
    rejects(
        &app,
        transforms(json!([
            {"name": "a", "sql": "SELECT * FROM c JOIN orders USING (id)"},
            {"name": "b", "sql": "SELECT * FROM a"},
            {"name": "c", "sql": "SELECT * FROM b"}
        ])),
        &[(
            "transforms[0].sql",
            "cycle: a -> c -> b -> a (each reads the next)",
        )],
    )
    .await;
    rejects(
        &app,
        transforms(json!([
            {"name": "ok", "sql": "SELECT * FROM orders"},
            {"name": "x", "sql": "SELECT * FROM y"},
            {"name": "y", "sql": "SELECT * FROM x JOIN ok USING (id)"},
            {"name": "after", "sql": "SELECT * FROM y"}
        ])),
        &[("transforms[1].sql", "cycle: x -> y -> x")],
    )
    .await;
    rejects(
        &app,
        transforms(json!([{"name": "selfish", "sql": "SELECT * FROM selfish"}])),
        &[("transforms[0].sql", "cycle: selfish -> selfish")],
    )
    .await;
}

#[tokio::test]
async fn outputs_must_name_nodes_use_known_modes_and_fit_the_target() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    let outputs = |o: Value| with(base(&s), |b| b["outputs"] = o);
    rejects(
        &app,
        outputs(json!([{"node": "totl"}])),
        &[(
            "outputs[0].node",
            "unknown node \"totl\" (did you mean \"totals\"?)",
        )],
    )
    .await;
    rejects(
        &app,
        outputs(json!([{"node": "totals"}, {"node": "nothing_like_it", "table": "x"}])),
        &[("outputs[1].node", "unknown node \"nothing_like_it\"")],
    )
    .await;
    for mode in ["upsert", "REPLACE", ""] {
        rejects(
            &app,
            outputs(json!([{"node": "totals", "mode": mode}])),
            &[(
                "outputs[0].mode",
                &format!("unknown mode {mode:?}: use replace, append or merge"),
            )],
        )
        .await;
    }
    rejects(&app, outputs(json!([])), &[("outputs", "must not be empty")]).await;
    rejects(
        &app,
        with(base(&s), |b| b["transforms"] = json!([])),
        &[("outputs", "nothing to persist")],
    )
    .await;
    rejects(
        &app,
        outputs(json!([{"node": "totals", "table": "t"}, {"node": "stg_orders", "table": "t"}])),
        &[("outputs[1].table", "\"t\" is written by another output too")],
    )
    .await;
    rejects(
        &app,
        outputs(json!([{"node": "totals"}, {"node": "stg_orders", "table": "totals", "mode": "append"}])),
        &[("outputs[1].table", "\"totals\" is written by another output too")],
    )
    .await;

    // Table names as each target engine can name them.
    let target = |store: i64, table: &str| {
        with(base(&s), |b| {
            b["target_store_id"] = json!(store);
            b["outputs"] = json!([{"node": "totals", "table": table}]);
        })
    };
    for (store, good, bad, why) in [
        (
            s.shop,
            vec!["t", "main.t", "_x$1"],
            vec!["other.t", "main.a.b", "1t", "a b", "t;drop"],
            "invalid",
        ),
        (
            s.pg,
            vec!["t", "analytics.t"],
            vec!["a.b.c", "bad-name", "x.", ""],
            "invalid",
        ),
        (
            s.csv_out,
            vec!["t", "t.csv", "a-b_c.1"],
            vec!["a/b", "../x", ".hidden", "a..b", "x y"],
            "file targets take a file name",
        ),
        (
            s.lake,
            vec!["facts", "analytics.customer_totals"],
            vec!["a/b", "-x", "a\\b"],
            "file targets take a file name",
        ),
    ] {
        for table in good {
            app.post("/flow-inputs", &target(store, table)).await.expect(201);
        }
        for table in bad {
            rejects(&app, target(store, table), &[("outputs[0].table", why)]).await;
        }
    }
    rejects(
        &app,
        target(s.shop, "other.t"),
        &[("outputs[0].table", "SQLite targets take table or main.table")],
    )
    .await;
    rejects(
        &app,
        target(s.pg, "a.b.c"),
        &[("outputs[0].table", "use table or schema.table")],
    )
    .await;
}

#[tokio::test]
async fn each_option_out_of_range_is_a_422_naming_it() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    for (option, values, range) in [
        ("max_parallel_tasks", [0u64, 65], "use 1 to 64"),
        ("task_timeout_s", [0, 604_801], "use 1 to 604800"),
        ("flow_timeout_s", [0, 2_592_001], "use 1 to 2592000"),
        ("max_attempts", [0, 11], "use 1 to 10"),
        ("memory_limit_mb", [15, 2049], "use 16 to 2048"),
    ] {
        for value in values {
            let path = format!("options.{option}");
            let message = format!("{value} is out of range: {range}");
            rejects(
                &app,
                with(base(&s), |b| b["options"] = json!({option: value})),
                &[(path.as_str(), message.as_str())],
            )
            .await;
        }
    }
    rejects(
        &app,
        with(base(&s), |b| {
            b["options"] = json!({"max_parallel_tasks": 0, "task_timeout_s": 0, "flow_timeout_s": 0,
                                  "max_attempts": 0, "memory_limit_mb": 0, "fail_fast": true})
        }),
        &[
            ("options.max_parallel_tasks", "out of range"),
            ("options.task_timeout_s", "out of range"),
            ("options.flow_timeout_s", "out of range"),
            ("options.max_attempts", "out of range"),
            ("options.memory_limit_mb", "out of range"),
        ],
    )
    .await;
}

#[tokio::test]
async fn configured_limits_on_sources_transforms_and_sql_length_are_enforced() {
    let app = spawn_app_with(
        AppOptions::default()
            .env("SLUICE__LIMITS__MAX_SOURCES", 2)
            .env("SLUICE__LIMITS__MAX_TRANSFORMS", 2)
            .env("SLUICE__LIMITS__MAX_SQL_LENGTH", 60),
    )
    .await;
    let s = stores(&app).await;
    let base = |s: &Stores| {
        with(base(s), |b| {
            b["transforms"][1]["sql"] = json!("SELECT * FROM stg_orders JOIN customers USING (id)")
        })
    };
    // At the limits: fine.
    let sixty = format!("SELECT id FROM orders{}", " ".repeat(60 - 21));
    assert_eq!(sixty.len(), 60);
    app.post(
        "/flow-inputs",
        &with(base(&s), |b| b["transforms"][0]["sql"] = json!(sixty)),
    )
    .await
    .expect(201);
    rejects(
        &app,
        with(base(&s), |b| {
            b["sources"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "third", "store_id": s.shop, "table": "t"}));
        }),
        &[("sources", "at most 2 sources are allowed")],
    )
    .await;
    rejects(
        &app,
        with(base(&s), |b| {
            b["transforms"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "third", "sql": "SELECT 1"}));
        }),
        &[("transforms", "at most 2 transforms are allowed")],
    )
    .await;
    rejects(
        &app,
        with(base(&s), |b| {
            b["transforms"][0]["sql"] = json!(format!("{sixty} "))
        }),
        &[(
            "transforms[0].sql",
            "the SQL is 61 characters long; at most 60 are allowed",
        )],
    )
    .await;
}

#[tokio::test]
async fn every_problem_of_a_request_is_reported_at_once() {
    let app = spawn_app().await;
    let s = stores(&app).await;
    let r = rejects(
        &app,
        json!({
            "name": "bad name",
            "source_store_ids": [s.shop, s.raw, 999999],
            "target_store_id": 888888,
            "sources": [
                {"name": "orders", "store_id": s.shop, "path": "x.csv"},
                {"name": "orders", "store_id": s.raw, "path": "c.csv", "csv": {"delimiter": "||"}}
            ],
            "transforms": [
                {"name": "t1", "sql": "SELECT * FROM ordrs"},
                {"name": "t2", "sql": "DROP TABLE orders"},
                {"name": "t3", "sql": "SELECT 1; SELECT 2"}
            ],
            "outputs": [{"node": "nope", "mode": "upsert"}],
            "options": {"max_attempts": 0, "memory_limit_mb": 1}
        }),
        &[
            ("name", "invalid name \"bad name\""),
            ("source_store_ids[2]", "data store 999999 does not exist"),
            ("target_store_id", "data store 888888 does not exist"),
            ("sources[0].path", "is a relational_db store"),
            ("sources[1].name", "duplicate name \"orders\""),
            ("sources[1].csv.delimiter", "one ASCII character"),
            ("transforms[0].sql", "did you mean \"orders\"?"),
            ("transforms[1].sql", "not DROP"),
            ("transforms[2].sql", "only one statement"),
            ("outputs[0].node", "unknown node \"nope\""),
            ("outputs[0].mode", "unknown mode \"upsert\""),
            ("options.max_attempts", "out of range"),
            ("options.memory_limit_mb", "out of range"),
        ],
    )
    .await;
    assert_eq!(r.body["title"], "Invalid request");
    assert_eq!(ids(&app.get("/flow-inputs").await.body), Vec::<i64>::new());
}
