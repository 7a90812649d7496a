//! `"mode": "merge"` on every target engine: SQLite, PostgreSQL, MySQL/MariaDB, CSV and Parquet
//! files and Parquet datasets. Three runs of one flow input over a CSV file that changes
//! between them: the first creates the target (with a key), the second updates rows (NULLs in
//! non-key columns both ways) and inserts others under a composite key, the third has
//! duplicate keys and fails before anything is staged, leaving the target as it was. Merges
//! into existing tables with and without a unique index on the key; validation.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::helpers::*;

const RUN_1: &str = "order_id,line,status,amount\n1,1,placed,10\n1,2,,20\n2,1,shipped,\n3,1,placed,30\n";
const RUN_2: &str = "order_id,line,status,amount\n1,2,shipped,25\n2,1,,5\n4,1,placed,40\n4,2,placed,41\n";
/// Two keys twice each (one of them a whole duplicated row), beside a good row.
const RUN_3: &str = "order_id,line,status,amount\n5,1,placed,1\n17,1,a,1\n17,1,b,2\n18,1,a,1\n18,1,a,1\n";

/// The target after runs 1 and 2, rows as `order_id|line|status|amount` (NULL as `-`).
const AFTER_1: &[&str] = &["1|1|placed|10", "1|2|-|20", "2|1|shipped|-", "3|1|placed|30"];
const AFTER_2: &[&str] = &[
    "1|1|placed|10",
    "1|2|shipped|25",
    "2|1|-|5",
    "3|1|placed|30",
    "4|1|placed|40",
    "4|2|placed|41",
];

/// Where a merge test writes, and how to read the target back.
enum Target {
    Sqlite(PathBuf),
    Postgres(PgScratch),
    Mysql(MyScratch),
    CsvFile(PathBuf),
    ParquetFile(PathBuf),
    Dataset(PathBuf),
}

impl Target {
    /// The output's table name.
    fn table(&self, name: &str) -> String {
        match self {
            Target::Postgres(s) => s.t(name),
            _ => name.to_string(),
        }
    }

    /// The rows of table `name` (columns order_id, line, status, amount), sorted.
    async fn rows(&self, name: &str) -> Vec<String> {
        let select = format!(
            "SELECT order_id, line, status, amount FROM {} ORDER BY 1, 2",
            self.table(name)
        );
        let cells: Vec<Vec<Option<String>>> = match self {
            Target::Sqlite(db) => sqlite_text(db, &select).await,
            Target::Postgres(s) => s.rows(&select).await,
            Target::Mysql(s) => s.rows(&select).await,
            Target::CsvFile(dir) => {
                let text = std::fs::read_to_string(dir.join(format!("{name}.csv"))).unwrap();
                let mut lines = text.lines();
                assert_eq!(lines.next(), Some("order_id,line,status,amount"), "{text}");
                lines
                    .map(|l| {
                        l.split(',')
                            .map(|c| (!c.is_empty()).then(|| c.to_string()))
                            .collect()
                    })
                    .collect()
            }
            Target::ParquetFile(dir) => parquet_cells(&dir.join(format!("{name}.parquet"))),
            Target::Dataset(dir) => parquet_cells(&dir.join(name)),
        };
        let mut rows: Vec<String> = cells
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|c| c.unwrap_or_else(|| "-".into()))
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        rows.sort_by_key(|r| {
            let mut parts = r.split('|').map(|p| p.parse::<i64>().unwrap_or(0));
            (parts.next(), parts.next())
        });
        rows
    }

    /// Leftovers of staging: tables or hidden files.
    async fn staged(&self) -> Vec<String> {
        match self {
            Target::Sqlite(db) => sqlite_text(
                db,
                "SELECT name FROM sqlite_master WHERE name LIKE '_sluice_stage_%'",
            )
            .await
            .into_iter()
            .filter_map(|r| r[0].clone())
            .collect(),
            Target::Postgres(s) => s.stage_tables().await,
            Target::Mysql(s) => s.stage_tables().await,
            Target::CsvFile(dir) | Target::ParquetFile(dir) | Target::Dataset(dir) => hidden_files(dir),
        }
    }
}

/// Every hidden file or directory in `dir` and its subdirectories (staging leftovers).
fn hidden_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            out.push(name);
        } else if e.path().is_dir() {
            out.extend(hidden_files(&e.path()));
        }
    }
    out
}

/// A Parquet file or dataset as text cells in the order order_id, line, status, amount.
fn parquet_cells(path: &Path) -> Vec<Vec<Option<String>>> {
    let (fields, rows) = parquet_table(path);
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["order_id", "line", "status", "amount"],
        "{}",
        path.display()
    );
    rows
}

fn source() -> Value {
    json!({"name": "orders", "store_id": 1, "path": "orders.csv",
           "csv": {"columns": {"order_id": "bigint", "line": "bigint", "status": "text", "amount": "bigint"}}})
}

fn merge_input(target_store: i64, outputs: Value) -> Value {
    json!({
        "name": "merge_orders", "source_store_ids": [1], "target_store_id": target_store,
        "sources": [source()],
        "transforms": [{"name": "fct_orders", "sql": "SELECT order_id, line, status, amount FROM orders"}],
        "outputs": outputs
    })
}

/// Writes `contents` as the source file, runs a flow of `input` and returns it, final.
async fn run_with(api: &Api, input: i64, contents: &str) -> Value {
    api.write_file("in/orders.csv", contents);
    let flow = api.start_flow(input).await;
    api.wait_final(flow).await
}

fn log_text(flow: &Value) -> String {
    flow["output"]["logs"]["lines"].to_string()
}

/// The three runs against `target` (whose store is `store`).
async fn three_runs(api: &Api, store: i64, target: &Target) {
    let outputs = json!([{"node": "fct_orders", "table": target.table("fct_orders"), "mode": "merge",
                          "unique_key": ["order_id", "line"]}]);
    let input = api.create_input(merge_input(store, outputs)).await;

    let first = run_with(api, input, RUN_1).await;
    assert_eq!(state(&first), "COMPLETED", "{first:#}");
    assert_eq!(target.rows("fct_orders").await, AFTER_1);

    let second = run_with(api, input, RUN_2).await;
    assert_eq!(state(&second), "COMPLETED", "{second:#}");
    assert_eq!(
        target.rows("fct_orders").await,
        AFTER_2,
        "old rows updated, new ones inserted"
    );

    let third = run_with(api, input, RUN_3).await;
    assert_eq!(state(&third), "FAILED", "{third:#}");
    let errors = third["output"]["errors"]["lines"].to_string();
    assert!(
        errors.contains("2 duplicate keys in the result of fct_orders, e.g. order_id=17, line=1"),
        "{errors}"
    );
    let persist = format!("fct_orders->{}", target.table("fct_orders"));
    assert_eq!(task(&third, &persist)["state"], "FAILED", "{third:#}");
    assert_eq!(
        target.rows("fct_orders").await,
        AFTER_2,
        "a failed merge changes nothing"
    );
    assert!(target.staged().await.is_empty(), "{:?}", target.staged().await);
    if !matches!(
        target,
        Target::CsvFile(_) | Target::ParquetFile(_) | Target::Dataset(_)
    ) {
        assert!(
            log_text(&first).contains("created it with"),
            "{}",
            log_text(&first)
        );
    }
}

#[tokio::test]
async fn merge_into_sqlite() {
    let app = spawn_app().await;
    app.csv_store("raw", "in").await;
    let store = app.sqlite_store("wh", "out/wh.db").await;
    let target = Target::Sqlite(app.file("out/wh.db"));
    three_runs(&app, store, &target).await;
    let unique = sqlite_text(
        &app.file("out/wh.db"),
        "SELECT group_concat(i.name) FROM pragma_index_list('fct_orders') l, pragma_index_info(l.name) i \
         WHERE l.\"unique\" = 1",
    )
    .await;
    assert_eq!(
        unique,
        [[Some("order_id,line".to_string())]],
        "the created table has a unique key"
    );
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn merge_into_postgres() {
    let app = spawn_app().await;
    app.csv_store("raw", "in").await;
    let scratch = PgScratch::new(&pg_url(), "merge").await;
    let store = app.postgres_store("pg", &pg_url()).await;
    let target = Target::Postgres(scratch);
    three_runs(&app, store, &target).await;
    let Target::Postgres(scratch) = target else {
        unreachable!()
    };
    let pk = scratch
        .rows(&format!(
            "SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
             WHERE i.indrelid = '{}'::regclass AND i.indisprimary",
            scratch.t("fct_orders")
        ))
        .await;
    assert_eq!(pk, [[Some("order_id,line".to_string())]]);
    scratch.drop().await;
}

#[tokio::test]
#[cfg_attr(not(sluice_mysql), ignore = "SLUICE_TEST_MYSQL_URL is not set")]
async fn merge_into_mysql() {
    let app = spawn_app().await;
    app.csv_store("raw", "in").await;
    let scratch = MyScratch::new(&mysql_url(), "merge").await;
    let store = app.mysql_store("my", &scratch.url).await;
    let target = Target::Mysql(scratch);
    three_runs(&app, store, &target).await;
    let Target::Mysql(scratch) = target else {
        unreachable!()
    };
    let pk = scratch
        .rows(&format!(
            "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = 'fct_orders' AND INDEX_NAME = 'PRIMARY'",
            scratch.db
        ))
        .await;
    assert_eq!(pk, [[Some("order_id,line".to_string())]]);
    scratch.drop().await;
}

#[tokio::test]
async fn merge_into_a_csv_file() {
    let app = spawn_app().await;
    app.csv_store("raw", "in").await;
    let store = app.csv_store("out", "out").await;
    three_runs(&app, store, &Target::CsvFile(app.file("out"))).await;
}

#[tokio::test]
async fn merge_into_a_parquet_file() {
    let app = spawn_app().await;
    app.csv_store("raw", "in").await;
    let dir = app.file("pq");
    std::fs::create_dir_all(&dir).unwrap();
    let store = app
        .create_store(json!({"name": "pq", "kind": "file", "engine": "parquet",
                              "connection": {"type": "file", "path": dir}}))
        .await;
    three_runs(&app, store, &Target::ParquetFile(dir)).await;
}

#[tokio::test]
async fn merge_into_a_parquet_dataset() {
    let app = spawn_app().await;
    app.csv_store("raw", "in").await;
    let store = app.parquet_store("lake", "lake").await;
    three_runs(&app, store, &Target::Dataset(app.file("lake"))).await;
}

// ---------------------------------------------------------------------------------------------
// Existing tables: with a unique index on the key the engine's upsert runs; without one, an
// update then an insert, and the log says so. Columns the result does not have keep their
// values in updated rows.

const LEGACY_ROWS: &str = "(1, 1, 'old', 1, 'keep'), (9, 9, 'other', 9, 'untouched')";

/// `legacy` and `keyed` after merging RUN_1: (order_id, line, status, amount, extra).
const MERGED_EXISTING: &[&str] = &[
    "1|1|placed|10|keep",
    "1|2|-|20|-",
    "2|1|shipped|-|-",
    "3|1|placed|30|-",
    "9|9|other|9|untouched",
];

async fn existing_tables(api: &Api, store: i64, table: impl Fn(&str) -> String) -> Value {
    let outputs = json!([
        {"node": "fct_orders", "table": table("legacy"), "mode": "merge", "unique_key": ["order_id", "line"]},
        {"node": "fct_orders", "table": table("keyed"), "mode": "merge", "unique_key": ["line", "order_id"]}
    ]);
    let input = api.create_input(merge_input(store, outputs)).await;
    let flow = run_with(api, input, RUN_1).await;
    assert_eq!(state(&flow), "COMPLETED", "{flow:#}");
    let logs = log_text(&flow);
    assert!(
        logs.contains(&format!(
            "merge into {}: it has no unique index or primary key on (order_id, line)",
            table("legacy")
        )),
        "{logs}"
    );
    assert!(
        !logs.contains(&format!("merge into {}:", table("keyed"))),
        "{logs}"
    );
    flow
}

fn joined(rows: Vec<Vec<Option<String>>>) -> Vec<String> {
    rows.into_iter()
        .map(|r| {
            r.into_iter()
                .map(|c| c.unwrap_or_else(|| "-".into()))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

#[tokio::test]
async fn merge_into_existing_sqlite_tables() {
    let app = spawn_app().await;
    app.csv_store("raw", "in").await;
    let db = app.file("out/wh.db");
    seed_sqlite(
        &db,
        &format!(
            "CREATE TABLE legacy (order_id INTEGER, line INTEGER, status TEXT, amount INTEGER, extra TEXT);
             INSERT INTO legacy VALUES {LEGACY_ROWS};
             CREATE TABLE keyed (order_id INTEGER, line INTEGER, status TEXT, amount INTEGER, extra TEXT,
                                 PRIMARY KEY (order_id, line));
             INSERT INTO keyed VALUES {LEGACY_ROWS};"
        ),
    )
    .await;
    let store = app.sqlite_store("wh", "out/wh.db").await;
    existing_tables(&app, store, |t| t.to_string()).await;
    for table in ["legacy", "keyed"] {
        let rows = sqlite_text(
            &db,
            &format!("SELECT order_id, line, status, amount, extra FROM {table} ORDER BY 1, 2"),
        )
        .await;
        assert_eq!(joined(rows), MERGED_EXISTING, "{table}");
    }
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn merge_into_existing_postgres_tables() {
    let app = spawn_app().await;
    app.csv_store("raw", "in").await;
    let scratch = PgScratch::new(&pg_url(), "merge_existing").await;
    // `amount` is numeric and `status` varchar in the target: values are cast to its types.
    scratch
        .exec(&format!(
            "CREATE TABLE legacy (order_id bigint, line integer, status varchar(20), amount numeric(10,0), extra text);
             INSERT INTO legacy VALUES {LEGACY_ROWS};
             CREATE TABLE keyed (order_id bigint, line integer, status varchar(20), amount numeric(10,0), extra text,
                                 UNIQUE (line, order_id));
             INSERT INTO keyed VALUES {LEGACY_ROWS};"
        ))
        .await;
    let store = app.postgres_store("pg", &pg_url()).await;
    existing_tables(&app, store, |t| scratch.t(t)).await;
    for table in ["legacy", "keyed"] {
        let rows = scratch
            .rows(&format!(
                "SELECT order_id, line, status, amount, extra FROM {table} ORDER BY 1, 2"
            ))
            .await;
        assert_eq!(joined(rows), MERGED_EXISTING, "{table}");
    }
    assert!(scratch.stage_tables().await.is_empty());
    scratch.drop().await;
}

#[tokio::test]
#[cfg_attr(not(sluice_mysql), ignore = "SLUICE_TEST_MYSQL_URL is not set")]
async fn merge_into_existing_mysql_tables() {
    let app = spawn_app().await;
    app.csv_store("raw", "in").await;
    let scratch = MyScratch::new(&mysql_url(), "merge_existing").await;
    scratch
        .exec(&format!(
            "CREATE TABLE legacy (order_id bigint, line int, status varchar(20), amount decimal(10,0), extra text);
             INSERT INTO legacy VALUES {LEGACY_ROWS};
             CREATE TABLE keyed (order_id bigint NOT NULL, line int NOT NULL, status varchar(20),
                                 amount decimal(10,0), extra text, PRIMARY KEY (line, order_id));
             INSERT INTO keyed VALUES {LEGACY_ROWS};"
        ))
        .await;
    let store = app.mysql_store("my", &scratch.url).await;
    existing_tables(&app, store, |t| t.to_string()).await;
    for table in ["legacy", "keyed"] {
        let rows = scratch
            .rows(&format!(
                "SELECT order_id, line, status, amount, extra FROM {table} ORDER BY 1, 2"
            ))
            .await;
        assert_eq!(joined(rows), MERGED_EXISTING, "{table}");
    }
    assert!(scratch.stage_tables().await.is_empty());
    scratch.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Validation and run-time key checks

#[tokio::test]
async fn a_merge_needs_a_unique_key_and_only_a_merge_has_one() {
    let app = spawn_app().await;
    app.csv_store("raw", "in").await;
    let store = app.sqlite_store("wh", "out/wh.db").await;
    let reply = app
        .post(
            "/flow-inputs",
            &merge_input(
                store,
                json!([
                    {"node": "fct_orders", "table": "a", "mode": "merge"},
                    {"node": "fct_orders", "table": "b", "mode": "append", "unique_key": ["order_id"]},
                    {"node": "fct_orders", "table": "c", "mode": "merge", "unique_key": ["order_id", "order_id"]}
                ]),
            ),
        )
        .await
        .expect(422);
    assert_eq!(
        reply.error_paths(),
        [
            "outputs[0].unique_key",
            "outputs[1].unique_key",
            "outputs[2].unique_key[1]"
        ],
        "{:#}",
        reply.body
    );
    let created = app
        .post(
            "/flow-inputs",
            &merge_input(
                store,
                json!([{"node": "fct_orders", "mode": "merge", "unique_key": ["order_id", "line"]}]),
            ),
        )
        .await
        .expect(201);
    assert_eq!(
        created.body["outputs"][0]["unique_key"],
        json!(["order_id", "line"])
    );
    assert_eq!(created.body["outputs"][0]["mode"], "merge");
}

#[tokio::test]
async fn a_key_column_the_result_lacks_fails_the_output_with_a_hint() {
    let app = spawn_app().await;
    app.csv_store("raw", "in").await;
    let store = app.sqlite_store("wh", "out/wh.db").await;
    let input = app
        .create_input(merge_input(
            store,
            json!([{"node": "fct_orders", "mode": "merge", "unique_key": ["order_idd"]}]),
        ))
        .await;
    let flow = run_with(&app, input, RUN_1).await;
    assert_eq!(state(&flow), "FAILED", "{flow:#}");
    let errors = flow["output"]["errors"]["lines"].to_string();
    assert!(
        errors.contains("unique_key column \\\"order_idd\\\" (did you mean \\\"order_id\\\"?) is not in the result of fct_orders"),
        "{errors}"
    );
    assert!(
        !app.file("out/wh.db").exists()
            || sqlite_text(&app.file("out/wh.db"), "SELECT name FROM sqlite_master")
                .await
                .is_empty()
    );
}

#[tokio::test]
async fn a_null_key_fails_before_staging() {
    let app = spawn_app().await;
    app.csv_store("raw", "in").await;
    let store = app.csv_store("out", "out").await;
    let input = app
        .create_input(merge_input(
            store,
            json!([{"node": "fct_orders", "mode": "merge", "unique_key": ["order_id", "line"]}]),
        ))
        .await;
    let flow = run_with(&app, input, "order_id,line,status,amount\n1,1,a,1\n2,,b,2\n").await;
    assert_eq!(state(&flow), "FAILED", "{flow:#}");
    let errors = flow["output"]["errors"]["lines"].to_string();
    assert!(
        errors.contains("1 row of the result of fct_orders with a NULL key, e.g. line IS NULL"),
        "{errors}"
    );
    assert!(!app.file("out/fct_orders.csv").exists());
    assert!(hidden_files(&app.file("out")).is_empty());
}
