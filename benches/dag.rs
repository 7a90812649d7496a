//! The DAG benchmark: `cargo bench --bench dag`.
//!
//! A generated shop (dirty strings, duplicates, NULLs, orphans, about 1.2 payments per order) as
//! CSV files, and a DAG of nine models of the usual shape — staging layers that deduplicate with
//! `ROW_NUMBER() ... = 1`, joins, aggregates, window functions — whose four marts are written as
//! Parquet files. The same SQL runs, each in a fresh child process (so peak RSS is its own), on:
//!
//! - **Sluice**, through its API on a fresh server (a flow input with the nine transforms);
//! - **DataFusion tables**: one `SessionContext`, every model `CREATE TABLE ... AS` (in memory),
//!   then the marts written;
//! - **DataFusion views**: the same with every model a view;
//! - **DuckDB** (its Python package, when `python3 -c "import duckdb"` works or
//!   `SLUICE_BENCH_PYTHON` names a Python that has it), models as tables.
//!
//! Runs are interleaved (A B C D A B C D ...) and the medians reported, with the ratios. Every
//! engine's marts are checked against each other (row counts and sums). Settings:
//! `SLUICE_BENCH_ORDERS` (comma-separated, default `1000000,5000000`), `SLUICE_BENCH_RUNS`
//! (default 3), `SLUICE_BENCH_LOW_MEMORY_MB` (default 512: one more Sluice run of the largest
//! set with that `memory_limit_mb`), `SLUICE_BENCH_DIR` (default: a temporary directory),
//! `SLUICE_BENCH_ENGINES` (the engines beside Sluice, default all), `SLUICE_BENCH_TASKS` (print
//! each run's per-task times for Sluice and per-model times for DuckDB).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::start_server;

// ---- the data ------------------------------------------------------------------------------

/// A small, fast, deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const CATEGORIES: &[&str] = &[
    "Garden", " kitchen", "KITCHEN ", "toys", "Books", "music ", " SPORTS", "outdoor",
];
const STATUSES: &[&str] = &[
    "placed",
    "Shipped",
    " shipped",
    "SHIPPED ",
    "completed",
    "Completed",
    "returned",
    " cancelled",
];
const METHODS: &[&str] = &["card", "Card ", " PAYPAL", "paypal", "bank_transfer", "voucher"];
const COUNTRIES: &[&str] = &["de", "DE ", "fr", " FR", "us", "US", "gb", "it", "es", "", "nl"];
const FIRST: &[&str] = &[
    "Amélie", "Jonas", "Priya", "Oliver", "Camille", "Lena", "Marcus", "Sofia", "Ethan", "Chloé", "Max",
    "Hannah", "Grace", "Lucas", "Mia", "Noah",
];
const LAST: &[&str] = &[
    "Laurent",
    "Becker",
    "Natarajan",
    "Hughes",
    "Dubois",
    "Fischer",
    "Reed",
    "Rossi",
    "Clarke",
    "Martin",
    "Wolf",
    "Lee",
    "Thompson",
    "Bernard",
];

fn ts(rng: &mut Rng, year_start_day: u64) -> String {
    // A timestamp in 2024, as text.
    let day = (year_start_day + rng.below(360)).min(359);
    let (month, dom) = (day / 30 + 1, day % 30 + 1);
    let dom = if month == 2 { dom.min(28) } else { dom };
    format!(
        "2024-{month:02}-{dom:02} {:02}:{:02}:{:02}",
        rng.below(24),
        rng.below(60),
        rng.below(60)
    )
}

/// Writes the shop for `orders` orders into `dir`; returns (rows, bytes) written.
fn generate(dir: &Path, orders: u64) -> (u64, u64) {
    std::fs::create_dir_all(dir).expect("data dir");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ orders);
    let customers = (orders / 10).max(10);
    let products = 5000u64;
    let (mut rows, mut bytes) = (0u64, 0u64);
    let mut file = |name: &str, header: &str, body: &mut dyn FnMut(&mut dyn Write) -> u64| {
        let path = dir.join(name);
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).expect("csv"));
        writeln!(w, "{header}").expect("write");
        rows += body(&mut w);
        w.flush().expect("flush");
        bytes += std::fs::metadata(&path).expect("size").len();
    };
    file(
        "customers.csv",
        "customer_id,full_name,email,country,city,updated_at",
        &mut |w| {
            let mut n = 0;
            for id in 1..=customers {
                // 3% were exported twice, the later row wins.
                let copies = if rng.chance(3) { 2 } else { 1 };
                for copy in 0..copies {
                    let first = FIRST[rng.below(FIRST.len() as u64) as usize];
                    let last = LAST[rng.below(LAST.len() as u64) as usize];
                    let email = if rng.chance(4) {
                        String::new()
                    } else {
                        format!(" {}.{}{id}@Example.COM", first.to_lowercase(), last)
                    };
                    let country = COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize];
                    let city = if rng.chance(5) { "" } else { "  Springfield" };
                    writeln!(
                        w,
                        "{id}, {first} {last} ,{email},{country},{city},{}",
                        ts(&mut rng, copy * 200)
                    )
                    .expect("write");
                    n += 1;
                }
            }
            n
        },
    );
    file(
        "products.csv",
        "product_id,sku,product_name,category,unit_price,updated_at",
        &mut |w| {
            let mut n = 0;
            for id in 1..=products {
                let copies = if rng.chance(2) { 2 } else { 1 };
                for copy in 0..copies {
                    let category = CATEGORIES[rng.below(CATEGORIES.len() as u64) as usize];
                    let price = if rng.chance(1) {
                        "N/A".to_string()
                    } else {
                        format!("{}.{:02}", 1 + rng.below(300), rng.below(100))
                    };
                    writeln!(
                        w,
                        "{id}, SKU-{id:05} ,\"Product {id}, {category}\",{category},{price},{}",
                        ts(&mut rng, copy * 200)
                    )
                    .expect("write");
                    n += 1;
                }
            }
            n
        },
    );
    file(
        "orders.csv",
        "order_id,customer_id,product_id,quantity,status,order_ts,updated_at",
        &mut |w| {
            let mut n = 0;
            for id in 1..=orders {
                // 1% orphans (an unknown customer), 2% updated later (two versions, the later
                // wins), 1% exact duplicate lines.
                let customer = if rng.chance(1) {
                    customers + 1 + rng.below(1000)
                } else {
                    1 + rng.below(customers)
                };
                let product = 1 + rng.below(products);
                let quantity = match rng.below(100) {
                    0 => "0".to_string(),
                    1 => "-1".to_string(),
                    2 => String::new(),
                    3 => "N/A".to_string(),
                    _ => (1 + rng.below(5)).to_string(),
                };
                let placed = ts(&mut rng, 0);
                let versions = if rng.chance(2) { 2 } else { 1 };
                for v in 0..versions {
                    let status = STATUSES[rng.below(STATUSES.len() as u64) as usize];
                    let line = format!(
                        "{id},{customer},{product},{quantity},{status},{placed},{}\n",
                        ts(&mut rng, v * 200)
                    );
                    w.write_all(line.as_bytes()).expect("write");
                    n += 1;
                    if rng.chance(1) {
                        w.write_all(line.as_bytes()).expect("write");
                        n += 1;
                    }
                }
            }
            n
        },
    );
    file(
        "payments.csv",
        "payment_id,order_id,amount,method,paid_at",
        &mut |w| {
            let mut n = 0;
            let mut payment = 0u64;
            for order in 1..=orders {
                // About 1.2 payments per order; 1% of payments for orders that do not exist;
                // some amounts negative (refunds) or missing; 1% duplicated.
                let count = if rng.chance(20) { 2 } else { 1 };
                for _ in 0..count {
                    payment += 1;
                    let target = if rng.chance(1) {
                        orders + 1 + rng.below(1000)
                    } else {
                        order
                    };
                    let amount = match rng.below(100) {
                        0 => String::new(),
                        1 => format!("-{}.{:02}", rng.below(50), rng.below(100)),
                        _ => format!("{}.{:02}", 1 + rng.below(500), rng.below(100)),
                    };
                    let method = METHODS[rng.below(METHODS.len() as u64) as usize];
                    let line = format!("{payment},{target},{amount},{method},{}\n", ts(&mut rng, 0));
                    w.write_all(line.as_bytes()).expect("write");
                    n += 1;
                    if rng.chance(1) {
                        w.write_all(line.as_bytes()).expect("write");
                        n += 1;
                    }
                }
            }
            n
        },
    );
    (rows, bytes)
}

// ---- the DAG -------------------------------------------------------------------------------

/// The column types every engine reads the CSV files with (dirty columns stay text).
fn columns() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        (
            "customers",
            vec![
                ("customer_id", "bigint"),
                ("full_name", "text"),
                ("email", "text"),
                ("country", "text"),
                ("city", "text"),
                ("updated_at", "timestamp"),
            ],
        ),
        (
            "products",
            vec![
                ("product_id", "bigint"),
                ("sku", "text"),
                ("product_name", "text"),
                ("category", "text"),
                ("unit_price", "text"),
                ("updated_at", "timestamp"),
            ],
        ),
        (
            "orders",
            vec![
                ("order_id", "bigint"),
                ("customer_id", "bigint"),
                ("product_id", "bigint"),
                ("quantity", "text"),
                ("status", "text"),
                ("order_ts", "timestamp"),
                ("updated_at", "timestamp"),
            ],
        ),
        (
            "payments",
            vec![
                ("payment_id", "bigint"),
                ("order_id", "bigint"),
                ("amount", "text"),
                ("method", "text"),
                ("paid_at", "timestamp"),
            ],
        ),
    ]
}

/// The nine models, in an order where each comes after what it reads. Plain SQL that
/// DataFusion and DuckDB both run unchanged.
fn models() -> Vec<(&'static str, &'static str)> {
    vec![
        ("stg_customers", "SELECT customer_id, trim(full_name) AS full_name, nullif(lower(trim(email)), '') AS email,
                coalesce(nullif(upper(trim(country)), ''), 'UNKNOWN') AS country, nullif(trim(city), '') AS city, updated_at
             FROM (SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY updated_at DESC) AS rn FROM customers) c
             WHERE rn = 1"),
        ("stg_products", "SELECT product_id, trim(sku) AS sku, product_name, lower(trim(category)) AS category,
                TRY_CAST(unit_price AS DECIMAL(10,2)) AS unit_price
             FROM (SELECT *, row_number() OVER (PARTITION BY product_id ORDER BY updated_at DESC) AS rn FROM products) p
             WHERE rn = 1"),
        ("stg_orders", "SELECT order_id, customer_id, product_id, TRY_CAST(quantity AS BIGINT) AS quantity,
                lower(trim(status)) AS status, order_ts
             FROM (SELECT *, row_number() OVER (PARTITION BY order_id ORDER BY updated_at DESC) AS rn FROM orders) o
             WHERE rn = 1 AND TRY_CAST(quantity AS BIGINT) > 0"),
        ("stg_payments", "SELECT payment_id, order_id, TRY_CAST(amount AS DECIMAL(12,2)) AS amount,
                lower(trim(method)) AS method, paid_at
             FROM (SELECT *, row_number() OVER (PARTITION BY payment_id ORDER BY paid_at DESC) AS rn FROM payments) p
             WHERE rn = 1 AND TRY_CAST(amount AS DECIMAL(12,2)) IS NOT NULL"),
        ("order_payments", "SELECT order_id, sum(amount) AS paid, count(*) AS payments, max(paid_at) AS last_paid_at
             FROM stg_payments GROUP BY order_id"),
        ("fct_orders", "SELECT o.order_id, o.customer_id, p.category, o.quantity, p.unit_price,
                o.quantity * p.unit_price AS amount, coalesce(op.paid, 0) AS paid, o.status, o.order_ts
             FROM stg_orders o
             JOIN stg_customers c ON c.customer_id = o.customer_id
             JOIN stg_products p ON p.product_id = o.product_id
             LEFT JOIN order_payments op ON op.order_id = o.order_id
             WHERE o.status IN ('placed', 'shipped', 'completed')"),
        ("dim_customers", "SELECT c.customer_id, c.full_name, c.email, c.country, count(f.order_id) AS orders,
                coalesce(sum(f.amount), 0) AS revenue, min(f.order_ts) AS first_order_ts, max(f.order_ts) AS last_order_ts
             FROM stg_customers c LEFT JOIN fct_orders f ON f.customer_id = c.customer_id
             GROUP BY c.customer_id, c.full_name, c.email, c.country"),
        ("customer_ranking", "SELECT country, customer_id, full_name, revenue,
                rank() OVER (PARTITION BY country ORDER BY revenue DESC) AS country_rank
             FROM dim_customers"),
        ("monthly_revenue", "SELECT category, month, revenue,
                sum(revenue) OVER (PARTITION BY category ORDER BY month ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running_revenue
             FROM (SELECT category, date_trunc('month', order_ts) AS month, sum(amount) AS revenue
                   FROM fct_orders GROUP BY category, date_trunc('month', order_ts)) m"),
    ]
}

const MARTS: &[&str] = &[
    "fct_orders",
    "dim_customers",
    "customer_ranking",
    "monthly_revenue",
];

/// The checks every engine's marts must agree on.
const CHECK_SQL: &[(&str, &str)] = &[
    (
        "fct_orders",
        "SELECT count(*) AS n, sum(amount) AS s FROM fct_orders",
    ),
    (
        "dim_customers",
        "SELECT count(*) AS n, sum(revenue) AS s FROM dim_customers",
    ),
    (
        "customer_ranking",
        "SELECT count(*) AS n, sum(country_rank) AS s FROM customer_ranking",
    ),
    (
        "monthly_revenue",
        "SELECT count(*) AS n, sum(running_revenue) AS s FROM monthly_revenue",
    ),
];

// ---- the runs (each in a child process) ------------------------------------------------------

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn df_type(t: &str) -> datafusion::arrow::datatypes::DataType {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    match t {
        "bigint" => DataType::Int64,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => DataType::Utf8,
    }
}

/// One DataFusion session: the CSV files as tables, every model a table (or a view), the marts
/// written as Parquet.
async fn run_datafusion(data: &Path, out: &Path, views: bool) -> Duration {
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::dataframe::DataFrameWriteOptions;
    use datafusion::prelude::*;
    let mut config = SessionConfig::new();
    config.options_mut().execution.parquet.compression = Some("snappy".into());
    let ctx = SessionContext::new_with_config(config);
    let t0 = Instant::now();
    for (table, cols) in columns() {
        let schema = Schema::new(
            cols.iter()
                .map(|(n, t)| Field::new(*n, df_type(t), true))
                .collect::<Vec<_>>(),
        );
        ctx.register_csv(
            table,
            data.join(format!("{table}.csv")).to_string_lossy().as_ref(),
            CsvReadOptions::new().schema(&schema).has_header(true),
        )
        .await
        .expect("register csv");
    }
    for (name, sql) in models() {
        let kind = if views { "VIEW" } else { "TABLE" };
        ctx.sql(&format!("CREATE {kind} {name} AS {sql}"))
            .await
            .expect("create")
            .collect()
            .await
            .expect("create");
    }
    for mart in MARTS {
        ctx.table(*mart)
            .await
            .expect("mart")
            .write_parquet(
                out.join(format!("{mart}.parquet")).to_string_lossy().as_ref(),
                DataFrameWriteOptions::new().with_single_file_output(true),
                None,
            )
            .await
            .expect("write");
    }
    t0.elapsed()
}

/// A fresh Sluice server (in this process): stores, the flow input, one flow.
async fn run_sluice(data: &Path, out: &Path, work: &Path, memory_mb: u64) -> Duration {
    let server = start_server(
        work,
        data.parent().expect("root"),
        &[("SLUICE__ENGINE__MEMORY_LIMIT_MB", "8192")],
    );
    let raw = server
        .post("/data-stores", json!({"name": "raw", "kind": "file", "engine": "csv", "connection": {"type": "file", "path": data}}))
        .await["id"]
        .as_i64()
        .expect("id");
    let lake = server
        .post("/data-stores", json!({"name": "marts", "kind": "file", "engine": "parquet", "connection": {"type": "file", "path": out}}))
        .await["id"]
        .as_i64()
        .expect("id");
    let sources: Vec<Value> = columns()
        .into_iter()
        .map(|(table, cols)| {
            let types: serde_json::Map<String, Value> =
                cols.iter().map(|(n, t)| (n.to_string(), json!(t))).collect();
            json!({"name": table, "store_id": raw, "path": format!("{table}.csv"), "csv": {"columns": types}})
        })
        .collect();
    let transforms: Vec<Value> = models()
        .into_iter()
        .map(|(n, sql)| json!({"name": n, "sql": sql}))
        .collect();
    let outputs: Vec<Value> = MARTS.iter().map(|m| json!({"node": m, "table": m})).collect();
    let input = server
        .post(
            "/flow-inputs",
            json!({"name": "shop", "source_store_ids": [raw], "target_store_id": lake, "sources": sources,
                   "transforms": transforms, "outputs": outputs,
                   "options": {"memory_limit_mb": memory_mb, "max_parallel_tasks": 4}}),
        )
        .await["id"]
        .as_i64()
        .expect("input");
    let (wall, _, flow) = server.run(json!({"flow_input_id": input})).await;
    if std::env::var_os("SLUICE_BENCH_TASKS").is_some() {
        print_tasks(&flow);
    }
    server.handle.stop(true).await;
    wall
}

/// Each task's start and end (seconds from the flow's start) and rows, to stderr: where the
/// time of one run goes (`SLUICE_BENCH_TASKS=1`).
fn print_tasks(flow: &Value) {
    let ts = |v: &Value| {
        v.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp_micros() as f64 / 1e6)
    };
    let Some(t0) = ts(&flow["output"]["started_utc"]) else {
        return;
    };
    for task in flow["output"]["tasks"].as_array().into_iter().flatten() {
        let (start, end) = (ts(&task["started_utc"]), ts(&task["finished_utc"]));
        eprintln!(
            "task {:18} {:8} {:7.2} .. {:7.2} ({:6.2} s) rows {}",
            task["name"].as_str().unwrap_or(""),
            task["kind"].as_str().unwrap_or(""),
            start.map(|s| s - t0).unwrap_or(f64::NAN),
            end.map(|e| e - t0).unwrap_or(f64::NAN),
            match (start, end) {
                (Some(s), Some(e)) => e - s,
                _ => f64::NAN,
            },
            task["rows"]
        );
    }
}

const DUCKDB_SCRIPT: &str = r#"
import json, resource, sys, time, duckdb
data, out, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
con = duckdb.connect()
t0 = time.time()
for table, cols in spec["columns"]:
    types = ", ".join("'%s': '%s'" % (n, {"bigint": "BIGINT", "timestamp": "TIMESTAMP"}.get(t, "VARCHAR")) for n, t in cols)
    con.execute("CREATE VIEW %s AS SELECT * FROM read_csv('%s/%s.csv', header=true, columns={%s})" % (table, data, table, types))
for name, sql in spec["models"]:
    t = time.time()
    con.execute("CREATE TABLE %s AS %s" % (name, sql))
    print("model %-18s %6.2f s" % (name, time.time() - t), file=sys.stderr)
for mart in spec["marts"]:
    t = time.time()
    con.execute("COPY %s TO '%s/%s.parquet' (FORMAT parquet, COMPRESSION snappy)" % (mart, out, mart))
    print("write %-18s %6.2f s" % (mart, time.time() - t), file=sys.stderr)
took = time.time() - t0
print("RESULT %.4f %.1f" % (took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))
"#;

/// What one run took and its peak RSS.
#[derive(Debug, Clone, Copy)]
struct Run {
    secs: f64,
    rss_mib: f64,
}

/// Runs `engine` once in a fresh process.
fn run_child(engine: &str, data: &Path, out: &Path, memory_mb: u64) -> Run {
    try_child(engine, data, out, memory_mb).unwrap_or_else(|e| panic!("{e}"))
}

fn try_child(engine: &str, data: &Path, out: &Path, memory_mb: u64) -> Result<Run, String> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).expect("out");
    let output = if engine == "duckdb" {
        let spec = json!({"columns": columns(), "models": models(), "marts": MARTS});
        Command::new(common::duckdb_python().expect("duckdb"))
            .args(["-c", DUCKDB_SCRIPT])
            .arg(data)
            .arg(out)
            .arg(spec.to_string())
            .output()
            .expect("python")
    } else {
        Command::new(std::env::current_exe().expect("exe"))
            .args(["--child", engine])
            .arg(data)
            .arg(out)
            .arg(memory_mb.to_string())
            .output()
            .expect("child")
    };
    let text = String::from_utf8_lossy(&output.stdout);
    if std::env::var_os("SLUICE_BENCH_TASKS").is_some() {
        eprint!("{engine}:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    let Some(line) = text.lines().find(|l| l.starts_with("RESULT ")) else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!("{engine} failed: {text} {}", tail.join(" | ")));
    };
    let mut parts = line.split_whitespace().skip(1);
    Ok(Run {
        secs: parts.next().and_then(|s| s.parse().ok()).unwrap_or(0.0),
        rss_mib: parts.next().and_then(|s| s.parse().ok()).unwrap_or(0.0),
    })
}

fn child(engine: &str, data: &Path, out: &Path, memory_mb: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let took = rt.block_on(async {
        match engine {
            "sluice" => {
                let work = out.with_extension("work");
                let _ = std::fs::remove_dir_all(&work);
                let t = run_sluice(data, out, &work, memory_mb).await;
                let _ = std::fs::remove_dir_all(&work);
                t
            }
            "datafusion-tables" => run_datafusion(data, out, false).await,
            "datafusion-views" => run_datafusion(data, out, true).await,
            other => panic!("unknown engine {other}"),
        }
    });
    println!("RESULT {:.4} {:.1}", took.as_secs_f64(), peak_rss_mib());
}

/// Row counts and sums of every mart in `out`, for comparing engines.
fn checksums(out: &Path) -> Vec<(String, String)> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        let mut sums = Vec::new();
        for (mart, sql) in CHECK_SQL {
            ctx.register_parquet(
                *mart,
                out.join(format!("{mart}.parquet")).to_string_lossy().as_ref(),
                Default::default(),
            )
            .await
            .expect("mart");
            let batches = ctx.sql(sql).await.expect("check").collect().await.expect("check");
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .map(|t| t.to_string())
                .unwrap_or_default();
            // Sums of decimals print with the scale of their type; compare the numbers.
            let values: Vec<String> = text
                .lines()
                .nth(3)
                .unwrap_or("")
                .split('|')
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.parse::<f64>()
                        .map(|f| format!("{f:.2}"))
                        .unwrap_or(v.to_string())
                })
                .collect();
            sums.push((mart.to_string(), values.join(" ")));
        }
        sums
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values[values.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let memory = args[i + 4].parse().expect("memory");
        child(
            &args[i + 1],
            Path::new(&args[i + 2]),
            Path::new(&args[i + 3]),
            memory,
        );
        return;
    }
    let orders: Vec<u64> = std::env::var("SLUICE_BENCH_ORDERS")
        .unwrap_or_else(|_| "1000000,5000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = std::env::var("SLUICE_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let low_memory: u64 = std::env::var("SLUICE_BENCH_LOW_MEMORY_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let temp = tempfile::tempdir().expect("temp");
    let root: PathBuf = std::env::var("SLUICE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| temp.path().to_path_buf());
    let mut engines = vec!["sluice", "datafusion-tables", "datafusion-views"];
    match common::duckdb_python() {
        Some(_) => engines.push("duckdb"),
        None => {
            println!("DuckDB: not measured (no python3 with the duckdb package; set SLUICE_BENCH_PYTHON)")
        }
    }
    if let Ok(only) = std::env::var("SLUICE_BENCH_ENGINES") {
        // Sluice stays first: the ratios are to it.
        engines.retain(|e| *e == "sluice" || only.split(',').any(|o| o.trim() == *e));
    }
    println!(
        "machine: {} cores; runs interleaved, {runs} each, medians",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    for &n in &orders {
        let data = root.join(format!("shop-{n}"));
        let t = Instant::now();
        let (rows, bytes) = if data.join("payments.csv").exists() {
            let bytes = ["customers", "products", "orders", "payments"]
                .iter()
                .map(|t| {
                    std::fs::metadata(data.join(format!("{t}.csv")))
                        .map(|m| m.len())
                        .unwrap_or(0)
                })
                .sum();
            (0, bytes)
        } else {
            generate(&data, n)
        };
        println!(
            "\n== DAG of {} models over {n} orders: {} MB of CSV{} (generated in {:.1} s) ==",
            models().len(),
            bytes / 1_000_000,
            if rows > 0 {
                format!(", {rows} rows")
            } else {
                String::new()
            },
            t.elapsed().as_secs_f64()
        );
        let mut results: Vec<Vec<Run>> = vec![Vec::new(); engines.len()];
        let mut sums: Vec<Vec<(String, String)>> = vec![Vec::new(); engines.len()];
        for _ in 0..runs {
            for (i, engine) in engines.iter().enumerate() {
                let out = root.join(format!("out-{engine}"));
                let run = run_child(engine, &data, &out, 2048);
                results[i].push(run);
                sums[i] = checksums(&out);
            }
        }
        let medians: Vec<(f64, f64)> = results
            .iter()
            .map(|r| {
                let mut secs: Vec<f64> = r.iter().map(|x| x.secs).collect();
                let mut rss: Vec<f64> = r.iter().map(|x| x.rss_mib).collect();
                (median(&mut secs), median(&mut rss))
            })
            .collect();
        let sluice = medians[0].0;
        for (i, engine) in engines.iter().enumerate() {
            let all: Vec<String> = results[i].iter().map(|r| format!("{:.2}", r.secs)).collect();
            println!(
                "{engine:18}: {:7.2} s median ({}), peak RSS {:6.0} MiB, Sluice / this = {:.2}",
                medians[i].0,
                all.join(" "),
                medians[i].1,
                sluice / medians[i].0
            );
        }
        for (i, engine) in engines.iter().enumerate().skip(1) {
            if sums[i] != sums[0] {
                println!("RESULTS DIFFER: sluice {:?} vs {engine} {:?}", sums[0], sums[i]);
            }
        }
        println!("marts (rows, sum) agree across engines: {:?}", sums[0]);
        if Some(&n) == orders.iter().max() && low_memory > 0 {
            let out = root.join("out-sluice-low-memory");
            match try_child("sluice", &data, &out, low_memory) {
                Ok(run) => println!(
                    "sluice at memory_limit_mb {low_memory}: {:.2} s, peak RSS {:.0} MiB",
                    run.secs, run.rss_mib
                ),
                Err(e) => println!("sluice at memory_limit_mb {low_memory}: FAILED: {e}"),
            }
        }
    }
}
