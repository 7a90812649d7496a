//! The bundled example (`examples/shop`, the README's walk-through): its store and flow-input
//! JSON files as they are in the repository, its dirty CSV files, and every row of every table
//! it produces, checked against values computed independently (by `examples/shop/expected.py`,
//! plain Python, then written down here). Once with SQLite metadata, once with PostgreSQL.

use std::path::Path;

use serde_json::{json, Value};

use crate::helpers::*;

fn example_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/shop"))
}

fn example_json(rel: &str) -> Value {
    let path = example_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A store body from `examples/shop/stores`, its relative path re-rooted in the app's files dir.
fn store_body(app: &TestApp, file: &str) -> Value {
    let mut body = example_json(&format!("stores/{file}"));
    let rel = body["connection"]["path"]
        .as_str()
        .expect("a file store")
        .to_string();
    body["connection"]["path"] = json!(app.file(&rel));
    body
}

/// Copies the CSV files, creates the stores and the flow input as the walk-through does, runs
/// the flow, and checks every output table row by row. With `materialize_all` every transform
/// is marked `materialize: true` (checkpointed), otherwise the planner decides which to inline
/// into their readers: the rows must be the same.
async fn run_example_and_check(app: &TestApp, materialize_all: bool) {
    for entry in std::fs::read_dir(example_dir().join("data")).expect("example data") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_string_lossy().to_string();
        app.write_file(
            &format!("examples/shop/data/{name}"),
            std::fs::read(&path).expect("read"),
        );
    }
    // The walk-through creates the stores in this order on a fresh server, so they get the ids
    // that flow_input.json names.
    let raw = app.create_store(store_body(app, "shop_raw.json")).await;
    let warehouse = app.create_store(store_body(app, "shop_warehouse.json")).await;
    let mut input = example_json("flow_input.json");
    assert_eq!(input["source_store_ids"], json!([1]), "flow_input.json");
    assert_eq!(input["target_store_id"], json!(2), "flow_input.json");
    input["source_store_ids"] = json!([raw]);
    input["target_store_id"] = json!(warehouse);
    for source in input["sources"].as_array_mut().expect("sources") {
        assert_eq!(source["store_id"], json!(1), "flow_input.json");
        source["store_id"] = json!(raw);
    }
    if materialize_all {
        for t in input["transforms"].as_array_mut().expect("transforms") {
            t["materialize"] = json!(true);
        }
    }
    let created = app.post("/flow-inputs", &input).await.expect(201).body;
    let input_id = created["id"].as_i64().expect("id");
    let planned = |name: &str| {
        created["dag"]["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no node {name}"))
    };
    if materialize_all {
        assert_eq!(planned("stg_orders")["why"], "marked materialize: true");
    } else {
        // Read by order_lines, customer_revenue and its output.
        assert_eq!(planned("stg_customers")["materialize"], true);
        assert_eq!(planned("stg_customers")["why"], "read by 3 nodes");
        assert_eq!(planned("stg_orders")["materialize"], false);
        assert_eq!(planned("stg_orders")["why"], "inlined into order_lines");
        assert_eq!(planned("order_lines")["why"], "read by 2 nodes");
        assert_eq!(
            planned("customer_ranking")["why"],
            "streamed into its output (customer_ranking->customer_ranking)"
        );
        assert_eq!(
            planned("customer_ranking->customer_ranking").get("materialize"),
            None
        );
    }

    let flow = app.start_flow(input_id).await;
    let done = app.wait_final(flow).await;
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    assert_eq!(done["output"]["progress"]["percent"], 100.0);
    assert_eq!(done["output"]["errors"]["lines"], json!([]));
    for (name, rows) in [
        ("customers", 25),
        ("products", 13),
        ("orders", 60),
        ("stg_customers", 22),
        ("stg_products", 13),
        // Orders with a zero, negative, empty or N/A quantity go, and so does the duplicate.
        ("stg_orders", 55),
        // Completed or shipped, with a known customer (not 99) and product.
        ("order_lines", 47),
        ("customer_revenue", 22),
        ("customer_ranking", 22),
        ("category_monthly", 12),
        ("stg_customers->customers", 22),
        ("customer_ranking->customer_ranking", 22),
        ("category_monthly->category_monthly", 12),
    ] {
        let t = task(&done, name);
        assert_eq!(t["state"], "COMPLETED", "{name}: {t}");
        let inlined = planned(name)["materialize"] == false && planned(name)["kind"] == "transform";
        if inlined {
            // An inlined node reports the rows its reader drew from it: filters of the reader
            // pushed into it can only make that fewer.
            let got = t["rows"].as_i64().expect("rows");
            assert!(got > 0 && got <= rows, "{name}: {t}");
        } else {
            assert_eq!(t["rows"], rows, "{name}: {t}");
        }
    }

    let db = app.file("examples/shop/out/warehouse.db");
    check_customers(&db).await;
    check_customer_ranking(&db).await;
    check_category_monthly(&db).await;
}

/// Deduplicated (latest `updated_at` wins), trimmed, emails lower-cased, blank and N/A as NULL,
/// countries upper-cased with UNKNOWN for none.
async fn check_customers(db: &Path) {
    #[rustfmt::skip]
    let expected: &[(i64, &str, Option<&str>, &str, Option<&str>, &str)] = &[
        (1, "Amélie Laurent", Some("amelie.laurent@example.fr"), "FR", Some("Lyon"), "2024-01-03 09:15:00"),
        (2, "Jonas Becker", Some("jonas.becker@example.de"), "DE", Some("Berlin"), "2024-01-04 11:00:00"),
        (3, "Priya Natarajan", Some("priya.n@example.com"), "US", Some("Austin"), "2024-02-10 10:00:00"),
        (4, "Oliver Hughes", Some("oliver.hughes@example.co.uk"), "GB", Some("Leeds"), "2024-01-06 14:45:00"),
        (5, "Camille Dubois", Some("camille.dubois@example.fr"), "FR", Some("Paris"), "2024-01-07 10:00:00"),
        (6, "Lena Fischer", None, "DE", Some("Hamburg"), "2024-01-08 16:20:00"),
        (7, "Marcus Reed", Some("marcus.reed@example.com"), "US", Some("Boulder"), "2024-03-01 18:00:00"),
        (8, "Sofia Rossi", Some("sofia.rossi@example.it"), "UNKNOWN", None, "2024-01-10 12:00:00"),
        (9, "Ethan Clarke", Some("ethan.clarke@example.co.uk"), "GB", Some("London"), "2024-01-11 13:10:00"),
        (10, "Chloé Martin", Some("chloe.martin@example.fr"), "FR", Some("Marseille"), "2024-01-12 15:00:00"),
        (11, "Maximilian Wolf", Some("max.wolf@example.de"), "DE", Some("Munich"), "2024-01-13 17:30:00"),
        (12, "Hannah Lee", Some("hannah.lee@example.com"), "US", Some("Seattle"), "2024-01-14 08:05:00"),
        (13, "Grace Thompson", Some("grace.t@example.co.uk"), "GB", Some("Bristol"), "2024-01-15 10:40:00"),
        (14, "Lucas Bernard", Some("lucas.bernard@example.fr"), "FR", Some("Lille"), "2024-01-16 11:11:00"),
        (15, "Mia Schneider", Some("mia.schneider@example.de"), "DE", Some("Cologne"), "2024-01-17 09:45:00"),
        (16, "Noah Johnson", Some("noah.j@example.com"), "US", Some("Boston"), "2024-01-18 14:00:00"),
        (17, "Isla Morgan", None, "GB", Some("Cardiff"), "2024-01-19 16:30:00"),
        (18, "Léa Petit", Some("lea.petit@example.fr"), "FR", Some("Nantes"), "2024-01-20 10:25:00"),
        (19, "Felix Braun", Some("felix.braun@example.de"), "DE", Some("Stuttgart"), "2024-01-21 12:50:00"),
        (20, "Ava Williams", Some("ava.w@example.com"), "US", Some("Chicago"), "2024-01-22 09:35:00"),
        (21, "Zoe Adams", Some("zoe.adams@example.com"), "UNKNOWN", Some("Portland"), "2024-01-23 10:00:00"),
        (22, "Tom Weber", Some("tom.weber@example.de"), "DE", Some("Dresden"), "2024-01-24 10:00:00"),
    ];
    let rows = sqlite_rows(
        db,
        "SELECT customer_id, full_name, email, country, city, updated_at FROM customers ORDER BY customer_id",
    )
    .await;
    assert_eq!(rows.len(), expected.len(), "customers: {rows:?}");
    for (row, e) in rows.iter().zip(expected) {
        assert_eq!(
            row,
            &vec![
                json!(e.0),
                json!(e.1),
                json!(e.2),
                json!(e.3),
                json!(e.4),
                json!(e.5)
            ],
            "customers"
        );
    }
}

/// Revenue of completed and shipped orders per customer (0 without any), ranked within the
/// country with gaps after ties (Hannah Lee and Noah Johnson share first place).
async fn check_customer_ranking(db: &Path) {
    #[rustfmt::skip]
    let expected: &[(&str, i64, i64, &str, i64, &str)] = &[
        ("DE", 1, 19, "Felix Braun", 3, "223.80"),
        ("DE", 2, 2, "Jonas Becker", 3, "132.88"),
        ("DE", 3, 11, "Maximilian Wolf", 3, "103.25"),
        ("DE", 4, 6, "Lena Fischer", 1, "67.20"),
        ("DE", 5, 15, "Mia Schneider", 1, "28.80"),
        ("DE", 6, 22, "Tom Weber", 0, "0.00"),
        ("FR", 1, 1, "Amélie Laurent", 4, "191.35"),
        ("FR", 2, 10, "Chloé Martin", 2, "131.30"),
        ("FR", 3, 5, "Camille Dubois", 3, "121.75"),
        ("FR", 4, 18, "Léa Petit", 2, "83.50"),
        ("FR", 5, 14, "Lucas Bernard", 2, "79.90"),
        ("GB", 1, 4, "Oliver Hughes", 3, "138.40"),
        ("GB", 2, 13, "Grace Thompson", 2, "111.18"),
        ("GB", 3, 17, "Isla Morgan", 2, "101.40"),
        ("GB", 4, 9, "Ethan Clarke", 2, "82.50"),
        ("UNKNOWN", 1, 8, "Sofia Rossi", 1, "49.90"),
        ("UNKNOWN", 2, 21, "Zoe Adams", 0, "0.00"),
        ("US", 1, 12, "Hannah Lee", 3, "178.80"),
        ("US", 1, 16, "Noah Johnson", 3, "178.80"),
        ("US", 3, 7, "Marcus Reed", 2, "118.00"),
        ("US", 4, 3, "Priya Natarajan", 3, "96.24"),
        ("US", 5, 20, "Ava Williams", 2, "56.70"),
    ];
    let rows = sqlite_rows(
        db,
        "SELECT country, country_rank, customer_id, full_name, orders, revenue FROM customer_ranking \
         ORDER BY country, country_rank, customer_id",
    )
    .await;
    assert_eq!(rows.len(), expected.len(), "customer_ranking: {rows:?}");
    for (row, e) in rows.iter().zip(expected) {
        assert_eq!(
            row[..5],
            [json!(e.0), json!(e.1), json!(e.2), json!(e.3), json!(e.4)],
            "customer_ranking"
        );
        assert_money(&row[5], e.5, &format!("customer_ranking revenue of {}", e.2));
    }
}

/// Units and revenue per category and month, with the running revenue within the category.
async fn check_category_monthly(db: &Path) {
    #[rustfmt::skip]
    let expected: &[(&str, &str, i64, &str, &str)] = &[
        ("garden", "2024-01", 4, "89.98", "89.98"),
        ("garden", "2024-02", 7, "149.59", "239.57"),
        ("garden", "2024-03", 11, "209.78", "449.35"),
        ("kitchen", "2024-01", 9, "262.55", "262.55"),
        ("kitchen", "2024-02", 4, "168.45", "431.00"),
        ("kitchen", "2024-03", 6, "190.55", "621.55"),
        ("office", "2024-01", 8, "141.50", "141.50"),
        ("office", "2024-02", 4, "73.70", "215.20"),
        ("office", "2024-03", 7, "149.55", "364.75"),
        ("outdoor", "2024-01", 9, "284.05", "284.05"),
        ("outdoor", "2024-02", 11, "309.65", "593.70"),
        ("outdoor", "2024-03", 7, "246.30", "840.00"),
    ];
    let rows = sqlite_rows(
        db,
        "SELECT category, month, units, revenue, running_revenue FROM category_monthly ORDER BY category, month",
    )
    .await;
    assert_eq!(rows.len(), expected.len(), "category_monthly: {rows:?}");
    for (row, e) in rows.iter().zip(expected) {
        assert_eq!(row[..3], [json!(e.0), json!(e.1), json!(e.2)], "category_monthly");
        assert_money(&row[3], e.3, &format!("category_monthly revenue {} {}", e.0, e.1));
        assert_money(&row[4], e.4, &format!("category_monthly running {} {}", e.0, e.1));
    }
}

/// Wide decimals (`DECIMAL_TEXT(38,2)`) are stored as exact text; narrow ones as numbers
/// (REAL or INTEGER), compared with the decimal text to well below a cent.
#[track_caller]
fn assert_money(actual: &Value, expected: &str, what: &str) {
    if let Some(text) = actual.as_str() {
        assert_eq!(text, expected, "{what}");
        return;
    }
    let want: f64 = expected.parse().expect("expected decimal");
    let got = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {actual}"));
    assert!((got - want).abs() < 1e-9, "{what}: {got} != {expected}");
}

#[tokio::test]
async fn example_shop_flow_cleans_joins_aggregates_and_ranks() {
    let app = spawn_app().await;
    run_example_and_check(&app, false).await;
}

#[tokio::test]
async fn example_shop_flow_gives_the_same_rows_with_every_node_materialized() {
    let app = spawn_app().await;
    run_example_and_check(&app, true).await;
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn example_shop_flow_with_metadata_on_postgres() {
    let url = pg_url();
    let db_name = format!("sluice_example_{}", uuid::Uuid::new_v4().simple());
    admin_sql(&url, &format!("CREATE DATABASE \"{db_name}\"")).await;
    let mut meta_url = reqwest::Url::parse(&url).expect("SLUICE_TEST_POSTGRES_URL is a URL");
    meta_url.set_path(&format!("/{db_name}"));

    // In a task of its own, so that the database is dropped even when a check fails.
    let meta = meta_url.to_string();
    let outcome = tokio::spawn(async move {
        let app = spawn_app_with(AppOptions::default().env("SLUICE__DATABASE__URL", &meta)).await;
        run_example_and_check(&app, false).await;
        // The metadata really is in PostgreSQL: the flow's final state was written there.
        let (state,): (String,) = {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&meta).await.expect("connect");
            sqlx::query_as("SELECT state FROM flow_output ORDER BY id DESC LIMIT 1")
                .fetch_one(&mut conn)
                .await
                .expect("flow_output row")
        };
        assert_eq!(state, "COMPLETED");
        app.stop().await;
    })
    .await;

    admin_sql(
        &url,
        &format!("DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"),
    )
    .await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn admin_sql(url: &str, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to SLUICE_TEST_POSTGRES_URL");
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}
