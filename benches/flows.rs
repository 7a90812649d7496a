//! Orchestration benchmark: `cargo bench --bench flows`.
//!
//! Prints, in one run, beside baselines measured in the same process:
//! 1. per-node overhead: a flow of 200 trivial transforms — independent ones (`SELECT n`), and a
//!    chain where each reads the one before — total time / nodes, beside the same 200 queries
//!    run directly on one DataFusion `SessionContext` (and the chain as 200 views);
//! 2. CSV → Parquet throughput (MB/s, rows/s) on a generated file of a few hundred MB, beside
//!    DataFusion's own `COPY ... TO ... STORED AS PARQUET` of the same file (and DuckDB's COPY),
//!    interleaved, medians.
//!
//! `SLUICE_BENCH_CSV_MB` sets the CSV size (default 300), `SLUICE_BENCH_RUNS` the interleaved
//! runs of the CSV → Parquet comparison (default 5), `SLUICE_BENCH_SECTIONS` which parts run
//! (default `overhead,csv`); `SLUICE_BENCH_PYTHON` a Python with `duckdb` for its COPY beside.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::start_server;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn per_node_overhead(files: &Path, data: &Path) {
    const N: usize = 200;
    println!("\n== Per-node overhead: {N} trivial transforms ==");
    // Baselines: the same queries on one DataFusion context — one after another, and as a
    // chain of views read by the last one.
    let ctx = datafusion::prelude::SessionContext::new();
    let t0 = Instant::now();
    for i in 0..N {
        ctx.sql(&format!("SELECT {i} AS n"))
            .await
            .expect("sql")
            .collect()
            .await
            .expect("collect");
    }
    let direct = t0.elapsed();
    println!(
        "DataFusion, {N} queries     : {:8.2} ms total, {:6.3} ms per query",
        ms(direct),
        ms(direct) / N as f64
    );
    let chain_sql = |i: usize| {
        if i == 0 {
            "SELECT 0 AS n".to_string()
        } else {
            format!("SELECT n + 1 AS n FROM t{}", i - 1)
        }
    };
    let t0 = Instant::now();
    for i in 0..N {
        ctx.sql(&format!("CREATE VIEW t{i} AS {}", chain_sql(i)))
            .await
            .expect("view");
    }
    ctx.sql(&format!("SELECT * FROM t{}", N - 1))
        .await
        .expect("sql")
        .collect()
        .await
        .expect("collect");
    let direct_chain = t0.elapsed();
    println!(
        "DataFusion, chain of views : {:8.2} ms total, {:6.3} ms per view",
        ms(direct_chain),
        ms(direct_chain) / N as f64
    );

    for (shape, parallel) in [("independent", 1), ("independent", 4), ("chain", 4)] {
        let dir = data.join(format!("overhead-{shape}-{parallel}"));
        let server = start_server(&dir, files, &[]);
        let db = server
            .post("/data-stores", json!({"name": "out", "kind": "columnar_db", "engine": "parquet", "connection": {"type": "file", "path": files.join(format!("overhead-out-{shape}-{parallel}"))}}))
            .await["id"]
            .as_i64()
            .expect("id");
        let (transforms, output): (Vec<Value>, String) = if shape == "chain" {
            (
                (0..N)
                    .map(|i| json!({"name": format!("t{i}"), "sql": chain_sql(i)}))
                    .collect(),
                format!("t{}", N - 1),
            )
        } else {
            (
                (0..N)
                    .map(|i| json!({"name": format!("t{i}"), "sql": format!("SELECT {i} AS n")}))
                    .collect(),
                "t0".to_string(),
            )
        };
        let input = server
            .post(
                "/flow-inputs",
                json!({"name": "overhead", "source_store_ids": [], "target_store_id": db,
                "transforms": transforms, "outputs": [{"node": output, "table": "out"}],
                "options": {"max_parallel_tasks": parallel}}),
            )
            .await["id"]
            .as_i64()
            .expect("id");
        // One warm-up run, then the measured ones.
        server.run_flow(input).await;
        let mut walls = Vec::new();
        let mut recs = Vec::new();
        for _ in 0..5 {
            let (wall, rec) = server.run_flow(input).await;
            walls.push(wall);
            recs.push(rec);
        }
        walls.sort();
        recs.sort();
        let nodes = (N + 1) as f64;
        let (wall, rec) = (walls[2], recs[2]);
        println!(
            "Sluice, {shape:11}, {parallel} at once: {:8.2} ms total ({:8.2} ms start→finish), {:6.3} ms per node",
            ms(wall),
            ms(rec),
            ms(wall) / nodes,
        );
        server.handle.stop(true).await;
    }
}

/// Writes a CSV of about `mb` megabytes; returns its rows and bytes.
fn generate_csv(path: &Path, mb: u64) -> (u64, u64) {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("csv"));
    writeln!(w, "id,customer,amount,quantity,category,ordered_at,paid,note").expect("write");
    let target = mb * 1024 * 1024;
    let categories = ["books", "garden", "kitchen", "toys", "music", "sports"];
    let (mut rows, mut bytes) = (0u64, 0u64);
    while bytes < target {
        let i = rows;
        let line = format!(
            "{i},customer-{:06},{}.{:02},{},{},2026-{:02}-{:02} {:02}:{:02}:{:02},{},note number {}\n",
            i % 100_000,
            (i * 7919) % 10_000,
            i % 100,
            1 + i % 20,
            categories[(i % 6) as usize],
            1 + i % 12,
            1 + i % 28,
            i % 24,
            i % 60,
            (i * 7) % 60,
            i % 3 == 0,
            i % 1000
        );
        w.write_all(line.as_bytes()).expect("write");
        bytes += line.len() as u64;
        rows += 1;
    }
    w.flush().expect("flush");
    (rows, bytes)
}

async fn csv_to_parquet(files: &Path, data: &Path) {
    let mb: u64 = std::env::var("SLUICE_BENCH_CSV_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let runs: usize = std::env::var("SLUICE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!("\n== CSV → Parquet, about {mb} MB, {runs} interleaved runs, medians ==");
    let input_dir = files.join("csv");
    std::fs::create_dir_all(&input_dir).expect("dir");
    let csv = input_dir.join("orders.csv");
    let t = Instant::now();
    let (rows, bytes) = generate_csv(&csv, mb);
    println!(
        "generated {rows} rows, {:.1} MB in {:.1} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let server = start_server(&data.join("csv"), files, &[]);
    let raw = server
        .post("/data-stores", json!({"name": "raw", "kind": "file", "engine": "csv", "connection": {"type": "file", "path": input_dir}}))
        .await["id"]
        .as_i64()
        .expect("id");
    let lake = server
        .post("/data-stores", json!({"name": "lake", "kind": "file", "engine": "parquet", "connection": {"type": "file", "path": files.join("lake")}}))
        .await["id"]
        .as_i64()
        .expect("id");
    let input = server
        .post(
            "/flow-inputs",
            json!({"name": "csv2parquet", "source_store_ids": [raw], "target_store_id": lake,
            "sources": [{"name": "orders", "store_id": raw, "path": "orders.csv"}],
            "outputs": [{"node": "orders", "table": "orders"}]}),
        )
        .await["id"]
        .as_i64()
        .expect("id");

    // A B C A B C ...: DataFusion (its schema inference and its COPY, Snappy like Sluice's
    // output), DuckDB's COPY where a Python with duckdb is at hand, then Sluice's flow (the
    // request to its end, which includes inferring the schema).
    let python = common::duckdb_python();
    let mut times: Vec<(&str, Vec<Duration>)> = vec![("DataFusion COPY", Vec::new())];
    if python.is_some() {
        times.push(("DuckDB COPY", Vec::new()));
    }
    times.push(("Sluice flow", Vec::new()));
    for _ in 0..runs {
        for (label, took) in times.iter_mut() {
            let t = match *label {
                "DataFusion COPY" => Some(datafusion_copy(&csv, &files.join("copy-out.parquet")).await),
                "DuckDB COPY" => duckdb_copy(
                    python.as_deref().unwrap_or("python3"),
                    &csv,
                    &files.join("duck-out.parquet"),
                ),
                _ => Some(server.run_flow(input).await.0),
            };
            took.extend(t);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let medians: Vec<(&str, Duration)> = times
        .iter_mut()
        .filter(|(_, v)| !v.is_empty())
        .map(|(l, v)| (*l, median(v)))
        .collect();
    let sluice = medians.last().map(|m| m.1).unwrap_or_default();
    for (label, d) in &medians {
        println!(
            "{label:<16}: {:7.2} s, {:7.1} MB/s, {:10.0} rows/s; Sluice's throughput / this = {:.2}",
            d.as_secs_f64(),
            bytes as f64 / 1e6 / d.as_secs_f64(),
            rows as f64 / d.as_secs_f64(),
            d.as_secs_f64() / sluice.as_secs_f64()
        );
    }
    server.handle.stop(true).await;
}

/// DataFusion on a fresh context: the file registered (its schema inferred) and copied.
async fn datafusion_copy(csv: &Path, out: &Path) -> Duration {
    let _ = std::fs::remove_file(out);
    let mut config = datafusion::prelude::SessionConfig::new();
    config.options_mut().execution.parquet.compression = Some("snappy".into());
    let ctx = datafusion::prelude::SessionContext::new_with_config(config);
    let t = Instant::now();
    ctx.register_csv("orders", csv.to_string_lossy().as_ref(), Default::default())
        .await
        .expect("csv");
    ctx.sql(&format!("COPY orders TO '{}' STORED AS PARQUET", out.display()))
        .await
        .expect("copy")
        .collect()
        .await
        .expect("copy");
    t.elapsed()
}

/// DuckDB's COPY of the file to Snappy Parquet, timed inside its process.
fn duckdb_copy(python: &str, csv: &Path, out: &Path) -> Option<Duration> {
    let _ = std::fs::remove_file(out);
    let script = "import sys, time, duckdb\ncon = duckdb.connect()\nt = time.time()\n\
        con.execute(\"COPY (SELECT * FROM read_csv('%s', header=true)) TO '%s' (FORMAT parquet, COMPRESSION snappy)\" % (sys.argv[1], sys.argv[2]))\n\
        print(time.time() - t)";
    let output = std::process::Command::new(python)
        .args(["-c", script])
        .arg(csv)
        .arg(out)
        .output()
        .expect("python");
    match String::from_utf8_lossy(&output.stdout).trim().parse::<f64>() {
        Ok(secs) => Some(Duration::from_secs_f64(secs)),
        Err(_) => {
            // Reported, not fatal: the other engines' figures still count.
            println!(
                "DuckDB's COPY failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
            None
        }
    }
}

fn main() {
    let temp = tempfile::tempdir().expect("temp");
    let files = temp.path().join("files");
    let data = temp.path().join("data");
    std::fs::create_dir_all(&files).expect("files");
    println!(
        "machine: {} cores; {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string()))
            .unwrap_or_default()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sections = std::env::var("SLUICE_BENCH_SECTIONS").unwrap_or_else(|_| "overhead,csv".into());
    rt.block_on(async {
        if sections.contains("overhead") {
            per_node_overhead(&files, &data).await;
        }
        if sections.contains("csv") {
            csv_to_parquet(&files, &data).await;
        }
    });
}
