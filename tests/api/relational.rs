//! PostgreSQL and MySQL/MariaDB stores against real servers: every type, value by value, in
//! each direction; a flow joining both with a CSV file; loads racing into a new schema; atomic
//! replace under readers; cancel mid-load; and failures that say what is wrong without ever
//! showing a password.
//!
//! Each test needs `SLUICE_TEST_POSTGRES_URL` and/or `SLUICE_TEST_MYSQL_URL` (.ci/run sets
//! both) and is reported as ignored, with the reason, without them (see `helpers::pg_url`). Tests run in parallel in one
//! binary, so each works in a PostgreSQL schema or MySQL database of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::process::ServerProcess;

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// Creates the flow input, runs it and returns the flow in its final state.
async fn run_flow(api: &Api, input: Value) -> Value {
    let input = api.create_input(input).await;
    let flow = api.start_flow(input).await;
    api.wait_final(flow).await
}

#[track_caller]
fn assert_completed(flow: &Value) {
    assert_eq!(state(flow), "COMPLETED", "{flow:#}");
}

/// One column of a type matrix: its name and the values of rows 1 and 2 as the target shows
/// them. Row 3 is NULL in every column.
type Cells = (&'static str, &'static str, &'static str);

/// Compares a type matrix read back from a target, value by value, and reports every
/// difference at once. `got` holds rows 1-3 (ordered by id), one cell per column of `cols`.
#[track_caller]
fn check_matrix(what: &str, cols: &[Cells], got: &[Vec<Option<String>>]) {
    assert_eq!(got.len(), 3, "{what}: expected 3 rows, got {got:?}");
    let mut wrong = Vec::new();
    for (c, (name, v1, v2)) in cols.iter().enumerate() {
        for (r, want) in [Some(*v1), Some(*v2), None].iter().enumerate() {
            let cell = got[r].get(c).cloned().flatten();
            if cell.as_deref() != *want {
                wrong.push(format!("  row {} {name}: got {cell:?}, want {want:?}", r + 1));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{what}: {} wrong value(s):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Compares column types and reports every difference at once.
#[track_caller]
fn check_types<T: PartialEq + std::fmt::Debug>(what: &str, got: &[(String, T)], want: &[(&str, T)]) {
    let mut wrong = Vec::new();
    for (name, ty) in want {
        match got.iter().find(|(n, _)| n == name) {
            None => wrong.push(format!("  {name}: missing")),
            Some((_, g)) if g != ty => wrong.push(format!("  {name}: got {g:?}, want {ty:?}")),
            Some(_) => {}
        }
    }
    for (name, _) in got {
        if !want.iter().any(|(n, _)| n == name) {
            wrong.push(format!("  {name}: unexpected column"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{what}: {} wrong column type(s):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

fn names(cols: &[Cells]) -> String {
    cols.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
}

/// The select list for a MySQL table: binary columns as `\x<hex>`, like PostgreSQL prints
/// them.
fn mysql_select(cols: &[Cells], binary: &[&str]) -> String {
    cols.iter()
        .map(|(n, _, _)| {
            if binary.contains(n) {
                format!("CONCAT('\\\\x', LOWER(HEX(`{n}`)))")
            } else {
                format!("`{n}`")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// MySQL shows integer display widths (`int(11)`), MariaDB and MySQL 5 do, MySQL 8 does not:
/// compare without them, except `tinyint(1)`, which is how both spell a boolean.
fn mysql_types(types: Vec<(String, String)>) -> Vec<(String, String)> {
    let width = regex::Regex::new(r"^(tinyint|smallint|mediumint|int|bigint)\((\d+)\)(.*)$").unwrap();
    types
        .into_iter()
        .map(|(n, t)| {
            let t = match width.captures(&t) {
                Some(c) if !(&c[1] == "tinyint" && &c[2] == "1") => format!("{}{}", &c[1], &c[3]),
                _ => t,
            };
            (n, t)
        })
        .collect()
}

/// The Parquet dataset `dir`: its Arrow column types, and the matrix columns of rows 1-3.
fn parquet_matrix(
    dir: &std::path::Path,
    cols: &[Cells],
) -> (Vec<(String, DataType)>, Vec<Vec<Option<String>>>) {
    let (fields, mut rows) = parquet_table(dir);
    let at = |name: &str| {
        fields
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no column {name} in {fields:?}"))
    };
    let id = at("id");
    rows.sort_by_key(|r| r[id].as_deref().and_then(|v| v.parse::<i64>().ok()));
    let picked = rows
        .iter()
        .map(|r| cols.iter().map(|c| r[at(c.0)].clone()).collect())
        .collect();
    // The engine holds strings and binaries as Arrow's view types, and Parquet outputs record
    // them so in their Arrow schema; in the Parquet file they are plain UTF-8 / binary columns
    // either way. The connectors' mapping is what is checked here.
    let fields = fields
        .into_iter()
        .map(|(n, t)| {
            let t = match t {
                DataType::Utf8View => DataType::Utf8,
                DataType::BinaryView => DataType::Binary,
                t => t,
            };
            (n, t)
        })
        .collect();
    (fields, picked)
}

fn ts(tz: bool) -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, tz.then(|| "UTC".into()))
}

const TIME_US: DataType = DataType::Time64(TimeUnit::Microsecond);

/// The value every matrix uses for text: non-ASCII, quotes, a backslash and a line break.
const TEXT_1: &str = "line1\nline2 \"q\" 's' \\ end";

// ---------------------------------------------------------------------------------------------
// PostgreSQL as a source: the type matrix

/// `types`: one column per PostgreSQL type; rows 1 and 2 hold edge values, row 3 NULLs.
async fn pg_types_table(pg: &PgScratch) {
    pg.exec(
        r##"
        CREATE TYPE mood AS ENUM ('happy', 'sad');
        CREATE TABLE types (
            id integer NOT NULL,
            c_smallint smallint, c_integer integer, c_bigint bigint,
            c_numeric numeric(16,2), c_numeric_free numeric, c_numeric_wide numeric(50,10),
            c_real real, c_double double precision, c_bool boolean,
            c_char char(4), c_varchar varchar(40), c_text text, c_name name,
            c_date date, c_time time, c_ts timestamp, c_tstz timestamptz,
            c_json json, c_jsonb jsonb, c_uuid uuid, c_bytea bytea, c_enum mood,
            c_int_array integer[], c_text_array text[], c_interval interval, c_inet inet);
        INSERT INTO types VALUES
        (1, 32767, 2147483647, 9223372036854775807,
         12345678901234.56, 3.14159265358979323846264338327950288419716939937510,
         1234567890123456789012345678901234567890.0123456789,
         1.5, 0.1, true,
         'ab', 'Zürich ✓ 日本', E'line1\nline2 "q" ''s'' \\ end', 'pg_name',
         '2024-02-29', '23:59:58.123456', '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56.5+02:00',
         '{"a": [1, 2], "b": "ü"}', '{"b": true, "a": 1}', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11',
         '\x00ff10', 'sad', '{1,2,3}', '{"a b",NULL,"ü"}', '1 day 02:03:04', '192.168.0.1/24'),
        (2, -32768, -2147483648, -9223372036854775808,
         -0.01, -0.000000000000000000001, -1,
         -0.25, -2.25, false,
         'wxyz', '', 'NULL', 'x',
         '1970-01-01', '00:00:00', '1970-01-01 00:00:00', '1999-12-31 23:59:59.999999-08:00',
         '[]', 'null', '00000000-0000-0000-0000-000000000000',
         '', 'happy', '{}', '{}', '-00:00:01', '::1');
        INSERT INTO types (id) VALUES (3);
        "##,
    )
    .await;
}

/// The PostgreSQL matrix as Arrow holds it (see `arrow_cell` for the text of each value).
fn pg_matrix_arrow() -> Vec<(&'static str, DataType, &'static str, &'static str)> {
    use DataType::*;
    vec![
        ("c_smallint", Int16, "32767", "-32768"),
        ("c_integer", Int32, "2147483647", "-2147483648"),
        ("c_bigint", Int64, "9223372036854775807", "-9223372036854775808"),
        ("c_numeric", Decimal128(16, 2), "12345678901234.56", "-0.01"),
        (
            "c_numeric_free",
            Utf8,
            "3.14159265358979323846264338327950288419716939937510",
            "-0.000000000000000000001",
        ),
        (
            "c_numeric_wide",
            Utf8,
            "1234567890123456789012345678901234567890.0123456789",
            "-1.0000000000",
        ),
        ("c_real", Float32, "1.5", "-0.25"),
        ("c_double", Float64, "0.1", "-2.25"),
        ("c_bool", Boolean, "true", "false"),
        ("c_char", Utf8, "ab  ", "wxyz"),
        ("c_varchar", Utf8, "Zürich ✓ 日本", ""),
        ("c_text", Utf8, TEXT_1, "NULL"),
        ("c_name", Utf8, "pg_name", "x"),
        ("c_date", Date32, "2024-02-29", "1970-01-01"),
        ("c_time", TIME_US, "23:59:58.123456", "00:00:00.000000"),
        (
            "c_ts",
            ts(false),
            "2024-02-29 12:34:56.789012",
            "1970-01-01 00:00:00.000000",
        ),
        (
            "c_tstz",
            ts(true),
            "2024-02-29 10:34:56.500000Z",
            "2000-01-01 07:59:59.999999Z",
        ),
        ("c_json", Utf8, r#"{"a": [1, 2], "b": "ü"}"#, "[]"),
        ("c_jsonb", Utf8, r#"{"a": 1, "b": true}"#, "null"),
        (
            "c_uuid",
            Utf8,
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "00000000-0000-0000-0000-000000000000",
        ),
        ("c_bytea", Binary, "\\x00ff10", "\\x"),
        ("c_enum", Utf8, "sad", "happy"),
        ("c_int_array", Utf8, "[1,2,3]", "[]"),
        ("c_text_array", Utf8, r#"["a b",null,"ü"]"#, "[]"),
        ("c_interval", Utf8, "1 day 02:03:04", "-00:00:01"),
        ("c_inet", Utf8, "192.168.0.1/24", "::1"),
    ]
}

/// A flow that copies `source` (a table of `store`) to table `table` of `target`.
fn copy_flow(name: &str, store: i64, source: &str, target: i64, table: &str) -> Value {
    json!({
        "name": name, "source_store_ids": [store], "target_store_id": target,
        "sources": [{"name": "src", "store_id": store, "table": source}],
        "outputs": [{"node": "src", "table": table, "mode": "replace"}],
        "options": {"max_attempts": 1}
    })
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn postgres_types_to_parquet() {
    let url = pg_url();
    let pg = PgScratch::new(&url, "sl_pg2pq").await;
    pg_types_table(&pg).await;
    let app = spawn_app().await;
    let src = app.postgres_store("pg", &url).await;
    let lake = app.parquet_store("lake", "lake").await;
    let done = run_flow(&app, copy_flow("pg2pq", src, &pg.t("types"), lake, "pg_types")).await;
    assert_completed(&done);
    assert_eq!(task(&done, "src")["rows"], 3);

    let matrix = pg_matrix_arrow();
    let cols: Vec<Cells> = matrix.iter().map(|(n, _, a, b)| (*n, *a, *b)).collect();
    let (fields, rows) = parquet_matrix(&app.file("lake/pg_types"), &cols);
    let mut want: Vec<(&str, DataType)> = vec![("id", DataType::Int32)];
    want.extend(matrix.iter().map(|(n, t, _, _)| (*n, t.clone())));
    check_types("PostgreSQL → Arrow types", &fields, &want);
    check_matrix("PostgreSQL → Parquet values", &cols, &rows);
    pg.drop().await;
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn postgres_types_to_sqlite() {
    let url = pg_url();
    let pg = PgScratch::new(&url, "sl_pg2lite").await;
    pg_types_table(&pg).await;
    let app = spawn_app().await;
    let src = app.postgres_store("pg", &url).await;
    let db = app.sqlite_store("lite", "out/w.db").await;
    let done = run_flow(&app, copy_flow("pg2lite", src, &pg.t("types"), db, "types")).await;
    assert_completed(&done);

    let w = app.file("out/w.db");
    let text = "TEXT";
    check_types(
        "PostgreSQL → SQLite declared types",
        &sqlite_columns(&w, "types").await,
        &[
            ("id", "INTEGER"),
            ("c_smallint", "INTEGER"),
            ("c_integer", "INTEGER"),
            ("c_bigint", "INTEGER"),
            ("c_numeric", "DECIMAL_TEXT(16,2)"),
            ("c_numeric_free", text),
            ("c_numeric_wide", text),
            ("c_real", "REAL"),
            ("c_double", "REAL"),
            ("c_bool", "BOOLEAN"),
            ("c_char", text),
            ("c_varchar", text),
            ("c_text", text),
            ("c_name", text),
            ("c_date", "DATE"),
            ("c_time", "TIME"),
            ("c_ts", "TIMESTAMP"),
            ("c_tstz", "TIMESTAMPTZ"),
            ("c_json", text),
            ("c_jsonb", text),
            ("c_uuid", text),
            ("c_bytea", "BLOB"),
            ("c_enum", text),
            ("c_int_array", text),
            ("c_text_array", text),
            ("c_interval", text),
            ("c_inet", text),
        ]
        .map(|(n, t)| (n, t.to_string())),
    );
    // SQLite's own forms: booleans 1/0, times and timestamps as text without trailing zeros.
    let cols: Vec<Cells> = pg_matrix_arrow()
        .into_iter()
        .map(|(n, _, a, b)| match n {
            "c_bool" => (n, "1", "0"),
            "c_time" => (n, "23:59:58.123456", "00:00:00"),
            "c_ts" => (n, "2024-02-29 12:34:56.789012", "1970-01-01 00:00:00"),
            "c_tstz" => (n, "2024-02-29 10:34:56.500Z", "2000-01-01 07:59:59.999999Z"),
            _ => (n, a, b),
        })
        .collect();
    let rows = sqlite_text(&w, &format!("SELECT {} FROM types ORDER BY id", names(&cols))).await;
    check_matrix("PostgreSQL → SQLite values", &cols, &rows);
    pg.drop().await;
}

// ---------------------------------------------------------------------------------------------
// MySQL as a source: the type matrix

async fn mysql_types_table(my: &MyScratch) {
    my.exec(
        r##"
        CREATE TABLE types (
            id int NOT NULL PRIMARY KEY,
            c_bool tinyint(1), c_tinyint tinyint, c_utinyint tinyint unsigned,
            c_smallint smallint, c_usmallint smallint unsigned, c_mediumint mediumint,
            c_int int, c_uint int unsigned, c_bigint bigint, c_ubigint bigint unsigned,
            c_year year, c_decimal decimal(16,2), c_decimal_wide decimal(50,10),
            c_float float, c_double double,
            c_char char(4), c_varchar varchar(40), c_text text,
            c_enum enum('happy','sad'), c_set set('a','b','c'), c_json json,
            c_binary binary(3), c_varbinary varbinary(10), c_blob blob, c_bit bit(8),
            c_date date, c_time time(6), c_datetime datetime(6),
            c_timestamp timestamp(6) NULL DEFAULT NULL
        ) DEFAULT CHARSET utf8mb4;
        SET time_zone = '+02:00';
        INSERT INTO types VALUES
        (1, 1, 127, 255, 32767, 65535, 8388607, 2147483647, 4294967295,
         9223372036854775807, 18446744073709551615, 2024,
         12345678901234.56, 1234567890123456789012345678901234567890.0123456789, 1.5, 0.1,
         'ab', 'Zürich ✓ 日本', 'line1\nline2 "q" \'s\' \\ end', 'sad', 'a,c',
         '{"a": [1, 2], "b": "ü"}', X'010203', X'00ff10', X'deadbeef', b'10100101',
         '2024-02-29', '23:59:58.123456', '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56.5'),
        (2, 0, -128, 0, -32768, 0, -8388608, -2147483648, 0,
         -9223372036854775808, 0, 1901,
         -0.01, -1, -0.25, -2.25,
         'wxyz', '', 'NULL', 'happy', '',
         '[]', X'000000', X'', X'', b'0',
         '1970-01-01', '00:00:00', '1970-01-01 00:00:00', '2000-01-01 01:59:59.999999');
        INSERT INTO types (id) VALUES (3);
        "##,
    )
    .await;
}

/// The MySQL matrix as Arrow holds it. The `timestamp` column was written in a +02:00
/// session, so its values are 2 hours earlier in UTC.
fn mysql_matrix_arrow() -> Vec<(&'static str, DataType, &'static str, &'static str)> {
    use DataType::*;
    vec![
        ("c_bool", Boolean, "true", "false"),
        ("c_tinyint", Int8, "127", "-128"),
        ("c_utinyint", Int16, "255", "0"),
        ("c_smallint", Int16, "32767", "-32768"),
        ("c_usmallint", Int32, "65535", "0"),
        ("c_mediumint", Int32, "8388607", "-8388608"),
        ("c_int", Int32, "2147483647", "-2147483648"),
        ("c_uint", Int64, "4294967295", "0"),
        ("c_bigint", Int64, "9223372036854775807", "-9223372036854775808"),
        ("c_ubigint", Decimal128(20, 0), "18446744073709551615", "0"),
        ("c_year", Int16, "2024", "1901"),
        ("c_decimal", Decimal128(16, 2), "12345678901234.56", "-0.01"),
        (
            "c_decimal_wide",
            Utf8,
            "1234567890123456789012345678901234567890.0123456789",
            "-1.0000000000",
        ),
        ("c_float", Float32, "1.5", "-0.25"),
        ("c_double", Float64, "0.1", "-2.25"),
        // MySQL drops CHAR's trailing spaces.
        ("c_char", Utf8, "ab", "wxyz"),
        ("c_varchar", Utf8, "Zürich ✓ 日本", ""),
        ("c_text", Utf8, TEXT_1, "NULL"),
        ("c_enum", Utf8, "sad", "happy"),
        ("c_set", Utf8, "a,c", ""),
        ("c_json", Utf8, r#"{"a": [1, 2], "b": "ü"}"#, "[]"),
        ("c_binary", Binary, "\\x010203", "\\x000000"),
        ("c_varbinary", Binary, "\\x00ff10", "\\x"),
        ("c_blob", Binary, "\\xdeadbeef", "\\x"),
        ("c_bit", Int64, "165", "0"),
        ("c_date", Date32, "2024-02-29", "1970-01-01"),
        ("c_time", TIME_US, "23:59:58.123456", "00:00:00.000000"),
        (
            "c_datetime",
            ts(false),
            "2024-02-29 12:34:56.789012",
            "1970-01-01 00:00:00.000000",
        ),
        (
            "c_timestamp",
            ts(true),
            "2024-02-29 10:34:56.500000Z",
            "1999-12-31 23:59:59.999999Z",
        ),
    ]
}

#[tokio::test]
#[cfg_attr(not(sluice_mysql), ignore = "SLUICE_TEST_MYSQL_URL is not set")]
async fn mysql_types_to_parquet() {
    let url = mysql_url();
    let my = MyScratch::new(&url, "sl_my2pq").await;
    mysql_types_table(&my).await;
    let app = spawn_app().await;
    let src = app.mysql_store("my", &my.url).await;
    let lake = app.parquet_store("lake", "lake").await;
    let done = run_flow(&app, copy_flow("my2pq", src, "types", lake, "my_types")).await;
    assert_completed(&done);
    assert_eq!(task(&done, "src")["rows"], 3);

    let matrix = mysql_matrix_arrow();
    let cols: Vec<Cells> = matrix.iter().map(|(n, _, a, b)| (*n, *a, *b)).collect();
    let (fields, rows) = parquet_matrix(&app.file("lake/my_types"), &cols);
    let mut want: Vec<(&str, DataType)> = vec![("id", DataType::Int32)];
    want.extend(matrix.iter().map(|(n, t, _, _)| (*n, t.clone())));
    check_types("MySQL → Arrow types", &fields, &want);
    check_matrix("MySQL → Parquet values", &cols, &rows);
    my.drop().await;
}

#[tokio::test]
#[cfg_attr(not(sluice_mysql), ignore = "SLUICE_TEST_MYSQL_URL is not set")]
async fn mysql_types_to_sqlite() {
    let url = mysql_url();
    let my = MyScratch::new(&url, "sl_my2lite").await;
    mysql_types_table(&my).await;
    let app = spawn_app().await;
    let src = app.mysql_store("my", &my.url).await;
    let db = app.sqlite_store("lite", "out/w.db").await;
    let done = run_flow(&app, copy_flow("my2lite", src, "types", db, "types")).await;
    assert_completed(&done);

    let w = app.file("out/w.db");
    let int = "INTEGER";
    let text = "TEXT";
    let blob = "BLOB";
    check_types(
        "MySQL → SQLite declared types",
        &sqlite_columns(&w, "types").await,
        &[
            ("id", int),
            ("c_bool", "BOOLEAN"),
            ("c_tinyint", int),
            ("c_utinyint", int),
            ("c_smallint", int),
            ("c_usmallint", int),
            ("c_mediumint", int),
            ("c_int", int),
            ("c_uint", int),
            ("c_bigint", int),
            ("c_ubigint", "DECIMAL_TEXT(20,0)"),
            ("c_year", int),
            ("c_decimal", "DECIMAL_TEXT(16,2)"),
            ("c_decimal_wide", text),
            ("c_float", "REAL"),
            ("c_double", "REAL"),
            ("c_char", text),
            ("c_varchar", text),
            ("c_text", text),
            ("c_enum", text),
            ("c_set", text),
            ("c_json", text),
            ("c_binary", blob),
            ("c_varbinary", blob),
            ("c_blob", blob),
            ("c_bit", int),
            ("c_date", "DATE"),
            ("c_time", "TIME"),
            ("c_datetime", "TIMESTAMP"),
            ("c_timestamp", "TIMESTAMPTZ"),
        ]
        .map(|(n, t)| (n, t.to_string())),
    );
    let cols: Vec<Cells> = mysql_matrix_arrow()
        .into_iter()
        .map(|(n, _, a, b)| match n {
            "c_bool" => (n, "1", "0"),
            "c_time" => (n, "23:59:58.123456", "00:00:00"),
            "c_datetime" => (n, "2024-02-29 12:34:56.789012", "1970-01-01 00:00:00"),
            "c_timestamp" => (n, "2024-02-29 10:34:56.500Z", "1999-12-31 23:59:59.999999Z"),
            _ => (n, a, b),
        })
        .collect();
    let rows = sqlite_text(&w, &format!("SELECT {} FROM types ORDER BY id", names(&cols))).await;
    check_matrix("MySQL → SQLite values", &cols, &rows);
    my.drop().await;
}

// ---------------------------------------------------------------------------------------------
// CSV into PostgreSQL and MySQL

/// A CSV file with typed columns (`csv.columns`) and one inferred text column; row 3 is
/// empty (NULL) everywhere.
const TYPES_CSV: &str = "id,small,big,dbl,f32,dec,txt,flag,d,ts,tstz,plain\n\
1,32767,9223372036854775807,0.1,1.5,12345678901234.56,\"Zürich ✓ 日本, \"\"quoted\"\"\",true,2024-02-29,2024-02-29 12:34:56.789012,2024-02-29T12:34:56.5+02:00,inferred\n\
2,-32768,-9223372036854775808,-2.25,-0.25,-0.01,plain,false,1970-01-01,1970-01-01 00:00:00,1999-12-31T23:59:59.999999-08:00,x\n\
3,,,,,,,,,,,\n";

fn csv_types_source(store: i64) -> Value {
    json!({"name": "types", "store_id": store, "path": "types.csv",
           "csv": {"columns": {"id": "int", "small": "int32", "big": "int", "dbl": "double",
                               "f32": "float32", "dec": "decimal(16,2)", "txt": "text",
                               "flag": "bool", "d": "date", "ts": "timestamp",
                               "tstz": "timestamptz"}}})
}

/// The CSV matrix's values as both databases print them, apart from the differences the
/// tests patch in.
fn csv_matrix() -> Vec<Cells> {
    vec![
        ("small", "32767", "-32768"),
        ("big", "9223372036854775807", "-9223372036854775808"),
        ("dbl", "0.1", "-2.25"),
        ("f32", "1.5", "-0.25"),
        ("dec", "12345678901234.56", "-0.01"),
        ("txt", "Zürich ✓ 日本, \"quoted\"", "plain"),
        ("flag", "t", "f"),
        ("d", "2024-02-29", "1970-01-01"),
        ("ts", "2024-02-29 12:34:56.789012", "1970-01-01 00:00:00"),
        (
            "tstz",
            "2024-02-29 10:34:56.5+00",
            "2000-01-01 07:59:59.999999+00",
        ),
        ("plain", "inferred", "x"),
    ]
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn csv_types_to_postgres_and_append_with_casts() {
    let url = pg_url();
    let pg = PgScratch::new(&url, "sl_csv2pg").await;
    // `append` into an existing table: columns matched by name, text cast to uuid and jsonb,
    // columns the input lacks keep their default.
    pg.exec(
        "CREATE TABLE events (id bigint, u uuid, doc jsonb, note text, origin text DEFAULT 'db'); \
         INSERT INTO events VALUES (1, '00000000-0000-0000-0000-000000000001', '{}', 'seed', 'seed')",
    )
    .await;
    let app = spawn_app().await;
    app.write_file("in/types.csv", TYPES_CSV);
    app.write_file(
        "in/events.csv",
        "note,u,doc,id\nfirst,A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11,\"{\"\"b\"\": true, \"\"a\"\": 1}\",10\n,,,11\n",
    );
    let csv = app.csv_store("raw", "in").await;
    let target = app.postgres_store("pg", &url).await;
    let done = run_flow(
        &app,
        json!({
            "name": "csv2pg", "source_store_ids": [csv], "target_store_id": target,
            "sources": [csv_types_source(csv),
                        {"name": "events", "store_id": csv, "path": "events.csv",
                         "csv": {"columns": {"id": "int"}}}],
            "outputs": [{"node": "types", "table": pg.t("csv_types"), "mode": "replace"},
                        {"node": "events", "table": pg.t("events"), "mode": "append"}],
            "options": {"max_attempts": 1}
        }),
    )
    .await;
    assert_completed(&done);

    check_types(
        "CSV → PostgreSQL column types",
        &pg.column_types("csv_types").await,
        &[
            ("id", "bigint"),
            ("small", "integer"),
            ("big", "bigint"),
            ("dbl", "double precision"),
            ("f32", "real"),
            ("dec", "numeric(16,2)"),
            ("txt", "text"),
            ("flag", "boolean"),
            ("d", "date"),
            ("ts", "timestamp without time zone"),
            ("tstz", "timestamp with time zone"),
            ("plain", "text"),
        ]
        .map(|(n, t)| (n, t.to_string())),
    );
    let cols = csv_matrix();
    let rows = pg
        .rows(&format!("SELECT {} FROM csv_types ORDER BY id", names(&cols)))
        .await;
    check_matrix("CSV → PostgreSQL values", &cols, &rows);

    // The existing table kept its types and its row, and gained two, cast.
    check_types(
        "the appended table keeps its types",
        &pg.column_types("events").await,
        &[
            ("id", "bigint"),
            ("u", "uuid"),
            ("doc", "jsonb"),
            ("note", "text"),
            ("origin", "text"),
        ]
        .map(|(n, t)| (n, t.to_string())),
    );
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        pg.rows("SELECT id, u, doc, note, origin FROM events ORDER BY id")
            .await,
        vec![
            vec![
                s("1"),
                s("00000000-0000-0000-0000-000000000001"),
                s("{}"),
                s("seed"),
                s("seed")
            ],
            vec![
                s("10"),
                s("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                s(r#"{"a": 1, "b": true}"#),
                s("first"),
                s("db")
            ],
            vec![s("11"), None, None, None, s("db")],
        ]
    );
    assert_eq!(pg.stage_tables().await, Vec::<String>::new());
    pg.drop().await;
}

#[tokio::test]
#[cfg_attr(not(sluice_mysql), ignore = "SLUICE_TEST_MYSQL_URL is not set")]
async fn csv_types_to_mysql() {
    let url = mysql_url();
    let my = MyScratch::new(&url, "sl_csv2my").await;
    let app = spawn_app().await;
    app.write_file("in/types.csv", TYPES_CSV);
    let csv = app.csv_store("raw", "in").await;
    let target = app.mysql_store("my", &my.url).await;
    let done = run_flow(
        &app,
        json!({
            "name": "csv2my", "source_store_ids": [csv], "target_store_id": target,
            "sources": [csv_types_source(csv)],
            "outputs": [{"node": "types", "table": "csv_types", "mode": "replace"}],
            "options": {"max_attempts": 1}
        }),
    )
    .await;
    assert_completed(&done);

    check_types(
        "CSV → MySQL column types",
        &mysql_types(my.column_types("csv_types").await),
        &[
            ("id", "bigint"),
            ("small", "int"),
            ("big", "bigint"),
            ("dbl", "double"),
            ("f32", "float"),
            ("dec", "decimal(16,2)"),
            ("txt", "longtext"),
            ("flag", "tinyint(1)"),
            ("d", "date"),
            ("ts", "datetime(6)"),
            ("tstz", "datetime(6)"),
            ("plain", "longtext"),
        ]
        .map(|(n, t)| (n, t.to_string())),
    );
    let charset = my
        .rows(&format!(
            "SELECT CHARACTER_SET_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = 'csv_types' AND COLUMN_NAME = 'txt'",
            my.db
        ))
        .await;
    assert_eq!(charset, vec![vec![Some("utf8mb4".to_string())]]);
    let cols: Vec<Cells> = csv_matrix()
        .into_iter()
        .map(|(n, a, b)| match n {
            "flag" => (n, "1", "0"),
            "ts" => (n, "2024-02-29 12:34:56.789012", "1970-01-01 00:00:00.000000"),
            "tstz" => (n, "2024-02-29 10:34:56.500000", "2000-01-01 07:59:59.999999"),
            _ => (n, a, b),
        })
        .collect();
    let rows = my
        .rows(&format!(
            "SELECT {} FROM csv_types ORDER BY id",
            mysql_select(&cols, &[])
        ))
        .await;
    check_matrix("CSV → MySQL values", &cols, &rows);
    assert_eq!(my.stage_tables().await, Vec::<String>::new());
    my.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Between the two databases

#[tokio::test]
#[cfg_attr(
    not(all(sluice_pg, sluice_mysql)),
    ignore = "SLUICE_TEST_POSTGRES_URL and SLUICE_TEST_MYSQL_URL are not both set"
)]
async fn postgres_types_to_mysql_and_back() {
    let (pg_url, my_url) = (pg_url(), mysql_url());
    let pg = PgScratch::new(&pg_url, "sl_pg2my").await;
    pg_types_table(&pg).await;
    let my = MyScratch::new(&my_url, "sl_pg2my").await;
    let app = spawn_app().await;
    let pg_store = app.postgres_store("pg", &pg_url).await;
    let my_store = app.mysql_store("my", &my.url).await;

    // There: PostgreSQL → MySQL.
    let done = run_flow(
        &app,
        copy_flow("there", pg_store, &pg.t("types"), my_store, "from_pg"),
    )
    .await;
    assert_completed(&done);
    let longtext = "longtext";
    check_types(
        "PostgreSQL → MySQL column types",
        &mysql_types(my.column_types("from_pg").await),
        &[
            ("id", "int"),
            ("c_smallint", "smallint"),
            ("c_integer", "int"),
            ("c_bigint", "bigint"),
            ("c_numeric", "decimal(16,2)"),
            ("c_numeric_free", longtext),
            ("c_numeric_wide", longtext),
            ("c_real", "float"),
            ("c_double", "double"),
            ("c_bool", "tinyint(1)"),
            ("c_char", longtext),
            ("c_varchar", longtext),
            ("c_text", longtext),
            ("c_name", longtext),
            ("c_date", "date"),
            ("c_time", "time(6)"),
            ("c_ts", "datetime(6)"),
            ("c_tstz", "datetime(6)"),
            ("c_json", longtext),
            ("c_jsonb", longtext),
            ("c_uuid", longtext),
            ("c_bytea", "longblob"),
            ("c_enum", longtext),
            ("c_int_array", longtext),
            ("c_text_array", longtext),
            ("c_interval", longtext),
            ("c_inet", longtext),
        ]
        .map(|(n, t)| (n, t.to_string())),
    );
    let cols: Vec<Cells> = pg_matrix_arrow()
        .into_iter()
        .map(|(n, _, a, b)| match n {
            "c_bool" => (n, "1", "0"),
            "c_ts" => (n, "2024-02-29 12:34:56.789012", "1970-01-01 00:00:00.000000"),
            "c_tstz" => (n, "2024-02-29 10:34:56.500000", "2000-01-01 07:59:59.999999"),
            _ => (n, a, b),
        })
        .collect();
    let rows = my
        .rows(&format!(
            "SELECT {} FROM from_pg ORDER BY id",
            mysql_select(&cols, &["c_bytea"])
        ))
        .await;
    check_matrix("PostgreSQL → MySQL values", &cols, &rows);

    // And back: MySQL → PostgreSQL. What MySQL kept comes back; the time zone of `c_tstz`
    // does not (MySQL's DATETIME has none), its UTC value does.
    let done = run_flow(
        &app,
        copy_flow("back", my_store, "from_pg", pg_store, &pg.t("round_trip")),
    )
    .await;
    assert_completed(&done);
    let text = "text";
    check_types(
        "MySQL → PostgreSQL column types (round trip)",
        &pg.column_types("round_trip").await,
        &[
            ("id", "integer"),
            ("c_smallint", "smallint"),
            ("c_integer", "integer"),
            ("c_bigint", "bigint"),
            ("c_numeric", "numeric(16,2)"),
            ("c_numeric_free", text),
            ("c_numeric_wide", text),
            ("c_real", "real"),
            ("c_double", "double precision"),
            ("c_bool", "boolean"),
            ("c_char", text),
            ("c_varchar", text),
            ("c_text", text),
            ("c_name", text),
            ("c_date", "date"),
            ("c_time", "time without time zone"),
            ("c_ts", "timestamp without time zone"),
            ("c_tstz", "timestamp without time zone"),
            ("c_json", text),
            ("c_jsonb", text),
            ("c_uuid", text),
            ("c_bytea", "bytea"),
            ("c_enum", text),
            ("c_int_array", text),
            ("c_text_array", text),
            ("c_interval", text),
            ("c_inet", text),
        ]
        .map(|(n, t)| (n, t.to_string())),
    );
    let cols: Vec<Cells> = pg_matrix_arrow()
        .into_iter()
        .map(|(n, _, a, b)| match n {
            "c_bool" => (n, "t", "f"),
            "c_time" => (n, "23:59:58.123456", "00:00:00"),
            "c_ts" => (n, "2024-02-29 12:34:56.789012", "1970-01-01 00:00:00"),
            "c_tstz" => (n, "2024-02-29 10:34:56.5", "2000-01-01 07:59:59.999999"),
            _ => (n, a, b),
        })
        .collect();
    let rows = pg
        .rows(&format!("SELECT {} FROM round_trip ORDER BY id", names(&cols)))
        .await;
    check_matrix("PostgreSQL → MySQL → PostgreSQL values", &cols, &rows);
    assert_eq!(my.stage_tables().await, Vec::<String>::new());
    assert_eq!(pg.stage_tables().await, Vec::<String>::new());
    pg.drop().await;
    my.drop().await;
}

#[tokio::test]
#[cfg_attr(
    not(all(sluice_pg, sluice_mysql)),
    ignore = "SLUICE_TEST_POSTGRES_URL and SLUICE_TEST_MYSQL_URL are not both set"
)]
async fn mysql_types_to_postgres() {
    let (pg_url, my_url) = (pg_url(), mysql_url());
    let pg = PgScratch::new(&pg_url, "sl_my2pg").await;
    let my = MyScratch::new(&my_url, "sl_my2pg").await;
    mysql_types_table(&my).await;
    let app = spawn_app().await;
    let pg_store = app.postgres_store("pg", &pg_url).await;
    let my_store = app.mysql_store("my", &my.url).await;
    let done = run_flow(
        &app,
        copy_flow("my2pg", my_store, "types", pg_store, &pg.t("from_my")),
    )
    .await;
    assert_completed(&done);

    let text = "text";
    let bytea = "bytea";
    check_types(
        "MySQL → PostgreSQL column types",
        &pg.column_types("from_my").await,
        &[
            ("id", "integer"),
            ("c_bool", "boolean"),
            ("c_tinyint", "smallint"),
            ("c_utinyint", "smallint"),
            ("c_smallint", "smallint"),
            ("c_usmallint", "integer"),
            ("c_mediumint", "integer"),
            ("c_int", "integer"),
            ("c_uint", "bigint"),
            ("c_bigint", "bigint"),
            ("c_ubigint", "numeric(20,0)"),
            ("c_year", "smallint"),
            ("c_decimal", "numeric(16,2)"),
            ("c_decimal_wide", text),
            ("c_float", "real"),
            ("c_double", "double precision"),
            ("c_char", text),
            ("c_varchar", text),
            ("c_text", text),
            ("c_enum", text),
            ("c_set", text),
            ("c_json", text),
            ("c_binary", bytea),
            ("c_varbinary", bytea),
            ("c_blob", bytea),
            ("c_bit", "bigint"),
            ("c_date", "date"),
            ("c_time", "time without time zone"),
            ("c_datetime", "timestamp without time zone"),
            ("c_timestamp", "timestamp with time zone"),
        ]
        .map(|(n, t)| (n, t.to_string())),
    );
    let cols: Vec<Cells> = mysql_matrix_arrow()
        .into_iter()
        .map(|(n, _, a, b)| match n {
            "c_bool" => (n, "t", "f"),
            "c_time" => (n, "23:59:58.123456", "00:00:00"),
            "c_datetime" => (n, "2024-02-29 12:34:56.789012", "1970-01-01 00:00:00"),
            "c_timestamp" => (n, "2024-02-29 10:34:56.5+00", "1999-12-31 23:59:59.999999+00"),
            _ => (n, a, b),
        })
        .collect();
    let rows = pg
        .rows(&format!("SELECT {} FROM from_my ORDER BY id", names(&cols)))
        .await;
    check_matrix("MySQL → PostgreSQL values", &cols, &rows);
    assert_eq!(pg.stage_tables().await, Vec::<String>::new());
    pg.drop().await;
    my.drop().await;
}

#[tokio::test]
#[cfg_attr(
    not(all(sluice_pg, sluice_mysql)),
    ignore = "SLUICE_TEST_POSTGRES_URL and SLUICE_TEST_MYSQL_URL are not both set"
)]
async fn one_flow_joins_postgres_mysql_and_csv_into_postgres() {
    let (pg_url, my_url) = (pg_url(), mysql_url());
    let pg = PgScratch::new(&pg_url, "sl_join").await;
    pg.exec(
        "CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL); \
         INSERT INTO customers VALUES (1, 'Ada'), (2, 'Bjørn'), (3, 'Chen'), (4, 'Dana')",
    )
    .await;
    let my = MyScratch::new(&my_url, "sl_join").await;
    my.exec(
        "CREATE TABLE orders (id int PRIMARY KEY, customer_id int, amount decimal(10,2)); \
         INSERT INTO orders VALUES (10, 1, 19.99), (11, 1, 0.01), (12, 2, 100.00), (13, 9, 5.00)",
    )
    .await;
    let app = spawn_app().await;
    app.write_file("in/regions.csv", "customer_id,region\n1,EU\n2,EU\n3,APAC\n");
    let csv = app.csv_store("raw", "in").await;
    let pg_store = app.postgres_store("pg", &pg_url).await;
    let my_store = app.mysql_store("my", &my.url).await;
    let done = run_flow(
        &app,
        json!({
            "name": "join3", "source_store_ids": [pg_store, my_store, csv], "target_store_id": pg_store,
            "sources": [
                {"name": "customers", "store_id": pg_store, "table": pg.t("customers")},
                {"name": "orders", "store_id": my_store, "query": "SELECT id, customer_id, amount FROM orders"},
                {"name": "regions", "store_id": csv, "path": "regions.csv"}
            ],
            "transforms": [{"name": "report", "sql":
                "SELECT c.id AS customer_id, c.name, r.region, count(o.id) AS orders, sum(o.amount) AS total \
                 FROM customers c JOIN regions r ON r.customer_id = c.id \
                 LEFT JOIN orders o ON o.customer_id = c.id \
                 GROUP BY c.id, c.name, r.region"}],
            "outputs": [{"node": "report", "table": pg.t("report"), "mode": "replace"}],
            "options": {"max_attempts": 1}
        }),
    )
    .await;
    assert_completed(&done);
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        pg.rows("SELECT customer_id, name, region, orders, total FROM report ORDER BY customer_id")
            .await,
        vec![
            vec![s("1"), s("Ada"), s("EU"), s("2"), s("20.00")],
            vec![s("2"), s("Bjørn"), s("EU"), s("1"), s("100.00")],
            vec![s("3"), s("Chen"), s("APAC"), s("0"), None],
        ]
    );
    check_types(
        "joined report column types",
        &pg.column_types("report").await,
        &[
            ("customer_id", "integer"),
            ("name", "text"),
            ("region", "text"),
            ("orders", "bigint"),
            ("total", "numeric(20,2)"),
        ]
        .map(|(n, t)| (n, t.to_string())),
    );
    pg.drop().await;
    my.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Loads racing to create a schema (a MySQL database) that does not exist yet

/// Four outputs of one flow into `new_schema`, then four flows at once into `other_schema`;
/// neither exists yet, so their loads race to create it: every flow completes, every table
/// has its rows. `count` returns the rows of a table.
async fn loads_into_a_new_schema_race_safely<F, Fut>(
    engine: &str,
    url: &str,
    new_schema: &str,
    other_schema: &str,
    count: F,
) where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let app = spawn_app().await;
    let mut csv = String::from("n\n");
    for i in 1..=500 {
        csv.push_str(&format!("{i}\n"));
    }
    app.write_file("in/n.csv", csv);
    let raw = app.csv_store("raw", "in").await;
    let db = app.create_store(db_store_body("db", engine, url)).await;

    let transforms: Vec<Value> = (0..4)
        .map(|k| json!({"name": format!("t{k}"), "sql": format!("SELECT n, {k} AS k FROM n")}))
        .collect();
    let outputs: Vec<Value> = (0..4)
        .map(|k| json!({"node": format!("t{k}"), "table": format!("{new_schema}.out_{k}")}))
        .collect();
    let done = run_flow(
        &app,
        json!({
            "name": "four_outputs", "source_store_ids": [raw], "target_store_id": db,
            "sources": [{"name": "n", "store_id": raw, "path": "n.csv"}],
            "transforms": transforms, "outputs": outputs,
            "options": {"max_attempts": 1, "max_parallel_tasks": 4}
        }),
    )
    .await;
    assert_completed(&done);
    for k in 0..4 {
        assert_eq!(count(format!("{new_schema}.out_{k}")).await, 500, "out_{k}");
    }

    let mut flows = Vec::new();
    for k in 0..4 {
        let input = app
            .create_input(json!({
                "name": format!("flow_{k}"), "source_store_ids": [raw], "target_store_id": db,
                "sources": [{"name": "n", "store_id": raw, "path": "n.csv"}],
                "outputs": [{"node": "n", "table": format!("{other_schema}.flow_{k}")}],
                "options": {"max_attempts": 1}
            }))
            .await;
        flows.push(input);
    }
    let mut started = Vec::new();
    for input in flows {
        started.push(app.start_flow(input).await);
    }
    for (k, flow) in started.into_iter().enumerate() {
        assert_completed(&app.wait_final(flow).await);
        assert_eq!(count(format!("{other_schema}.flow_{k}")).await, 500, "flow_{k}");
    }
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn postgres_outputs_racing_into_a_new_schema_all_complete() {
    let url = pg_url();
    let pg = PgScratch::new(&url, "sl_newschema").await;
    let (new_schema, other_schema) = (format!("{}_a", pg.schema), format!("{}_b", pg.schema));
    loads_into_a_new_schema_race_safely("postgres", &url, &new_schema, &other_schema, |table| {
        let pg = &pg;
        async move {
            let rows = pg.rows(&format!("SELECT count(*) FROM {table}")).await;
            rows[0][0].as_deref().unwrap_or_default().parse().unwrap()
        }
    })
    .await;
    for schema in [&new_schema, &other_schema] {
        pg_admin(&url, &format!("DROP SCHEMA {schema} CASCADE")).await;
    }
    pg.drop().await;
}

#[tokio::test]
#[cfg_attr(not(sluice_mysql), ignore = "SLUICE_TEST_MYSQL_URL is not set")]
async fn mysql_outputs_racing_into_a_new_database_all_complete() {
    let url = mysql_url();
    let my = MyScratch::new(&url, "sl_newdb").await;
    let (new_db, other_db) = (format!("{}_a", my.db), format!("{}_b", my.db));
    loads_into_a_new_schema_race_safely("mysql", &my.url, &new_db, &other_db, |table| {
        let my = &my;
        async move {
            let rows = my.rows(&format!("SELECT count(*) FROM {table}")).await;
            rows[0][0].as_deref().unwrap_or_default().parse().unwrap()
        }
    })
    .await;
    for db in [&new_db, &other_db] {
        my.exec(&format!("DROP DATABASE {db}")).await;
    }
    my.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Atomic replace under concurrent readers

/// What a reader loop saw: every `count(*)`, and the first error if any.
#[derive(Default)]
struct Observed {
    counts: Vec<i64>,
    error: Option<String>,
}

impl Observed {
    #[track_caller]
    fn check(&self, before: i64, after: i64) {
        assert!(self.error.is_none(), "a reader failed: {:?}", self.error);
        let odd: Vec<&i64> = self
            .counts
            .iter()
            .filter(|c| **c != before && **c != after)
            .collect();
        assert!(
            odd.is_empty(),
            "readers saw {} count(s) other than {before} or {after}: {:?}",
            odd.len(),
            &odd[..odd.len().min(20)]
        );
        assert_eq!(
            self.counts.first(),
            Some(&before),
            "the reader started on the old table"
        );
        assert_eq!(
            self.counts.last(),
            Some(&after),
            "the reader ended on the new table"
        );
    }
}

/// Reads `sql` (a count) over and over on its own connection until `stop`.
fn spawn_reader<F, Fut>(
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Observed>>,
    mut read: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<i64, String>> + Send,
{
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            match read().await {
                Ok(n) => seen.lock().unwrap().counts.push(n),
                Err(e) => {
                    seen.lock().unwrap().error = Some(e);
                    return;
                }
            }
        }
    })
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn postgres_replace_is_atomic_for_concurrent_readers() {
    let url = pg_url();
    let pg = PgScratch::new(&url, "sl_atomic").await;
    const BEFORE: i64 = 1000;
    const AFTER: i64 = 300_000;
    pg.exec(&format!(
        "CREATE TABLE t AS SELECT g AS x FROM generate_series(1, {BEFORE}) g"
    ))
    .await;
    let app = spawn_app().await;
    let store = app.postgres_store("pg", &url).await;
    let input = app
        .create_input(json!({
            "name": "replace", "source_store_ids": [store], "target_store_id": store,
            "sources": [{"name": "big", "store_id": store,
                         "query": format!("SELECT g AS x FROM generate_series(1, {AFTER}) g")}],
            "outputs": [{"node": "big", "table": pg.t("t"), "mode": "replace"}],
            "options": {"max_attempts": 1}
        }))
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Observed::default()));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let conn = Arc::new(tokio::sync::Mutex::new(pg.conn().await));
        let table = pg.t("t");
        readers.push(spawn_reader(stop.clone(), seen.clone(), move || {
            let conn = conn.clone();
            let sql = format!("SELECT count(*) FROM {table}");
            async move {
                let mut c = conn.lock().await;
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut *c)
                    .await
                    .map_err(|e| e.to_string())
            }
        }));
    }
    // Both readers are reading before the flow starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().counts.len() < 2 {
        assert!(Instant::now() < deadline, "readers did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let flow = app.start_flow(input).await;
    let done = app.wait_final(flow).await;
    let after_flow = seen.lock().unwrap().counts.len();
    // A few more reads after the publish.
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().counts.len() < after_flow + 4 && seen.lock().unwrap().error.is_none() {
        assert!(Instant::now() < deadline, "readers stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.expect("reader");
    }
    assert_completed(&done);
    {
        let seen = seen.lock().unwrap();
        eprintln!("{} reads during the replace", seen.counts.len());
        seen.check(BEFORE, AFTER);
    }
    assert_eq!(
        pg.rows("SELECT count(*), min(x), max(x) FROM t").await,
        vec![vec![
            Some(AFTER.to_string()),
            Some("1".into()),
            Some(AFTER.to_string())
        ]]
    );
    assert_eq!(pg.stage_tables().await, Vec::<String>::new());
    drop(seen);
    pg.drop().await;
}

#[tokio::test]
#[cfg_attr(not(sluice_mysql), ignore = "SLUICE_TEST_MYSQL_URL is not set")]
async fn mysql_replace_is_atomic_for_concurrent_readers() {
    let url = mysql_url();
    let my = MyScratch::new(&url, "sl_atomic").await;
    const BEFORE: i64 = 1000;
    const AFTER: i64 = 100_000;
    my.exec(&format!(
        "CREATE TABLE t (x bigint); \
         INSERT INTO t WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {BEFORE}) SELECT n FROM s"
    ))
    .await;
    let app = spawn_app().await;
    let mut csv = String::from("x\n");
    for i in 1..=AFTER {
        csv.push_str(&i.to_string());
        csv.push('\n');
    }
    app.write_file("in/n.csv", csv);
    let src = app.csv_store("raw", "in").await;
    let store = app.mysql_store("my", &my.url).await;
    let input = app
        .create_input(json!({
            "name": "replace", "source_store_ids": [src], "target_store_id": store,
            "sources": [{"name": "n", "store_id": src, "path": "n.csv"}],
            "outputs": [{"node": "n", "table": "t", "mode": "replace"}],
            "options": {"max_attempts": 1}
        }))
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Observed::default()));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let conn = Arc::new(tokio::sync::Mutex::new(my.conn().await));
        readers.push(spawn_reader(stop.clone(), seen.clone(), move || {
            let conn = conn.clone();
            async move {
                let mut c = conn.lock().await;
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM t")
                    .fetch_one(&mut *c)
                    .await
                    .map_err(|e| e.to_string())
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().counts.len() < 2 {
        assert!(Instant::now() < deadline, "readers did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let flow = app.start_flow(input).await;
    let done = app.wait_final(flow).await;
    let after_flow = seen.lock().unwrap().counts.len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().counts.len() < after_flow + 4 && seen.lock().unwrap().error.is_none() {
        assert!(Instant::now() < deadline, "readers stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.expect("reader");
    }
    assert_completed(&done);
    {
        let seen = seen.lock().unwrap();
        eprintln!("{} reads during the replace", seen.counts.len());
        seen.check(BEFORE, AFTER);
    }
    assert_eq!(my.stage_tables().await, Vec::<String>::new());
    assert_eq!(
        my.tables().await,
        vec!["t".to_string()],
        "no old or staged table left"
    );
    drop(seen);
    my.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Cancel in the middle of a large load

/// Sends the cancel, waits for CANCELLED (≤ 2 s) and returns the flow.
async fn cancel_now(app: &Api, flow: i64) -> Value {
    app.post(&format!("/flows/cancel/{flow}"), &json!({}))
        .await
        .expect(202);
    let sent = Instant::now();
    let done = app
        .wait_flow(flow, Duration::from_secs(10), |f| is_final(state(f)))
        .await;
    assert_eq!(state(&done), "CANCELLED", "{done:#}");
    assert!(
        sent.elapsed() <= Duration::from_secs(2),
        "CANCELLED took {:?}",
        sent.elapsed()
    );
    done
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn cancelling_a_postgres_load_stops_the_source_query_and_keeps_the_target() {
    let url = pg_url();
    let pg = PgScratch::new(&url, "sl_cancel").await;
    pg.exec("CREATE TABLE t (x integer); INSERT INTO t VALUES (1), (2), (3)")
        .await;
    let marker = format!("sluice_cancel_{}", unique_suffix());
    let app = spawn_app().await;
    let store = app.postgres_store("pg", &url).await;
    // Endless for a test: ~2000 rows a second for ten million rows.
    let query = format!(
        "SELECT g AS x FROM generate_series(1, 10000000) g WHERE pg_sleep(0.0005)::text = '' /* {marker} */"
    );
    let input = app
        .create_input(json!({
            "name": "slow", "source_store_ids": [store], "target_store_id": store,
            "sources": [{"name": "big", "store_id": store, "query": query}],
            "outputs": [{"node": "big", "table": pg.t("t"), "mode": "replace"}],
            "options": {"max_attempts": 1}
        }))
        .await;
    let flow = app.start_flow(input).await;
    app.wait_flow(flow, Duration::from_secs(15), |f| {
        task(f, "big")["state"] == "RUNNING"
    })
    .await;
    let mut admin = pg_connect(&url).await;
    let running = format!(
        "SELECT pid, state FROM pg_stat_activity WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !pg_text(&mut admin, &running)
        .await
        .iter()
        .any(|r| r[1].as_deref() == Some("active"))
    {
        assert!(
            Instant::now() < deadline,
            "the source query never showed up in pg_stat_activity"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let done = cancel_now(&app, flow).await;
    assert_eq!(task(&done, "big")["state"], "CANCELLED");
    // The server stopped the query: within a second it is gone from pg_stat_activity (or the
    // connection is idle again).
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = pg_text(&mut admin, &running).await;
        if left.iter().all(|r| r[1].as_deref() != Some("active")) {
            break;
        }
        assert!(Instant::now() < deadline, "the source query still runs: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        pg.rows("SELECT x FROM t ORDER BY x").await,
        vec![
            vec![Some("1".to_string())],
            vec![Some("2".into())],
            vec![Some("3".into())]
        ]
    );
    assert_eq!(pg.tables().await, vec!["t".to_string()], "no staging table left");
    wait_until_gone(&app.data_dir.join(format!("work/flow-{flow}"))).await;
    pg.drop().await;
}

#[tokio::test]
#[cfg_attr(not(sluice_mysql), ignore = "SLUICE_TEST_MYSQL_URL is not set")]
async fn cancelling_a_mysql_load_stops_the_source_query_and_keeps_the_target() {
    let url = mysql_url();
    let my = MyScratch::new(&url, "sl_cancel").await;
    my.exec(
        "CREATE TABLE t (x bigint); INSERT INTO t VALUES (1), (2), (3); \
         CREATE TABLE nums (n int); \
         INSERT INTO nums WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 1000) SELECT n FROM s",
    )
    .await;
    let marker = format!("sluice_cancel_{}", unique_suffix());
    let app = spawn_app().await;
    let store = app.mysql_store("my", &my.url).await;
    // A billion rows, each after a short sleep.
    let query = format!(
        "SELECT a.n AS x /* {marker} */ FROM nums a CROSS JOIN nums b CROSS JOIN nums c WHERE SLEEP(0.0005) = 0"
    );
    let input = app
        .create_input(json!({
            "name": "slow", "source_store_ids": [store], "target_store_id": store,
            "sources": [{"name": "big", "store_id": store, "query": query}],
            "outputs": [{"node": "big", "table": "t", "mode": "replace"}],
            "options": {"max_attempts": 1}
        }))
        .await;
    let flow = app.start_flow(input).await;
    app.wait_flow(flow, Duration::from_secs(15), |f| {
        task(f, "big")["state"] == "RUNNING"
    })
    .await;
    let mut admin = mysql_connect(&url).await;
    let running = format!(
        "SELECT ID, COMMAND FROM information_schema.PROCESSLIST \
         WHERE INFO LIKE '%{marker}%' AND ID <> CONNECTION_ID()"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while mysql_text(&mut admin, &running).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the source query never showed up in the process list"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let done = cancel_now(&app, flow).await;
    assert_eq!(task(&done, "big")["state"], "CANCELLED");
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let left = mysql_text(&mut admin, &running).await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the source query still runs: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        my.rows("SELECT x FROM t ORDER BY x").await,
        vec![
            vec![Some("1".to_string())],
            vec![Some("2".into())],
            vec![Some("3".into())]
        ]
    );
    assert_eq!(
        my.tables().await,
        vec!["nums".to_string(), "t".to_string()],
        "no staging table left"
    );
    wait_until_gone(&app.data_dir.join(format!("work/flow-{flow}"))).await;
    my.drop().await;
}

// ---------------------------------------------------------------------------------------------
// Failures: clear on the flow and on `POST /data-stores/{id}/check`

/// `POST /data-stores/{id}/check` of a store that works.
#[track_caller]
fn assert_check_ok(reply: &Reply) {
    assert_eq!(reply.status.as_u16(), 200, "{:#}", reply.body);
    assert!(reply.body["latency_ms"].is_number(), "{:#}", reply.body);
    assert!(
        !reply.body["server_version"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{:#}",
        reply.body
    );
}

/// `POST /data-stores/{id}/check` of a store that does not work: 422 problem+json whose
/// detail contains `needle` (case-insensitive).
#[track_caller]
fn assert_check_fails(reply: &Reply, needle: &str) {
    assert_eq!(reply.status.as_u16(), 422, "{:#}", reply.body);
    assert_eq!(
        reply.headers["content-type"], "application/problem+json",
        "{:#}",
        reply.body
    );
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.to_lowercase().contains(&needle.to_lowercase()),
        "the check should say {needle:?}: {:#}",
        reply.body
    );
}

/// The error of task `name`, which must have FAILED.
#[track_caller]
fn failed_task_error(flow: &Value, name: &str) -> String {
    let t = task(flow, name);
    assert_eq!(t["state"], "FAILED", "{flow:#}");
    t["error"].as_str().unwrap_or_default().to_string()
}

#[track_caller]
fn assert_mentions(what: &str, text: &str, needles: &[&str]) {
    let lower = text.to_lowercase();
    for n in needles {
        assert!(
            lower.contains(&n.to_lowercase()),
            "{what} should mention {n:?}: {text}"
        );
    }
}

/// A store on a port nobody listens on, a missing table and a syntax error: each fails its
/// task with a message that says so, and the check tells a working store from a dead one.
async fn unreachable_missing_and_syntax(
    engine: &str,
    url: &str,
    missing: &str,
    bad_sql: &str,
    syntax_words: &[&str],
) {
    let app = spawn_app().await;
    let good = app.create_store(db_store_body("good", engine, url)).await;
    let mut dead_body = db_store_body("dead", engine, url);
    dead_body["connection"]["host"] = json!("127.0.0.1");
    dead_body["connection"]["port"] = json!(1);
    let dead = app.create_store(dead_body).await;
    let lite = app.sqlite_store("lite", "out/w.db").await;

    // A missing table and a syntax error, side by side.
    let done = run_flow(
        &app,
        json!({
            "name": "bad", "source_store_ids": [good], "target_store_id": lite,
            "sources": [{"name": "missing", "store_id": good, "table": missing},
                        {"name": "broken", "store_id": good, "query": bad_sql}],
            "outputs": [{"node": "missing"}, {"node": "broken"}],
            "options": {"max_attempts": 1}
        }),
    )
    .await;
    assert_eq!(state(&done), "FAILED", "{done:#}");
    let table_name = missing.rsplit('.').next().unwrap();
    assert_mentions(
        "the missing table's error",
        &failed_task_error(&done, "missing"),
        &[table_name],
    );
    assert_mentions(
        "the syntax error",
        &failed_task_error(&done, "broken"),
        syntax_words,
    );
    let errors = done["output"]["errors"]["lines"].to_string();
    assert!(
        errors.contains("[missing]") && errors.contains("[broken]"),
        "both failures are in the flow's errors: {errors}"
    );
    // The store itself is fine.
    assert_check_ok(&app.post(&format!("/data-stores/{good}/check"), &json!({})).await);

    // Unreachable: a refused connection is transient, so the ingest is retried (the retry is
    // logged on the flow), then fails after its two attempts and says why.
    let input = app
        .create_input(json!({
            "name": "dead", "source_store_ids": [dead], "target_store_id": lite,
            "sources": [{"name": "a", "store_id": dead, "query": "SELECT 1 AS x"}],
            "outputs": [{"node": "a"}],
            "options": {"max_attempts": 2}
        }))
        .await;
    let flow = app.start_flow(input).await;
    let done = app
        .wait_flow(flow, Duration::from_secs(20), |f| is_final(state(f)))
        .await;
    assert_eq!(state(&done), "FAILED", "{done:#}");
    assert_mentions(
        "the unreachable store's error",
        &failed_task_error(&done, "a"),
        &["refused", "gave up after 2 attempts"],
    );
    let logs = done["output"]["logs"]["lines"].to_string();
    assert!(
        logs.contains("attempt 1 failed, retrying in") && logs.contains("refused"),
        "the retry is logged on the flow: {logs}"
    );

    // And the check says so too, promptly.
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        app.post(&format!("/data-stores/{dead}/check"), &json!({})),
    )
    .await
    .expect("the check of an unreachable store answers within 10 s");
    assert_check_fails(&reply, "refused");
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn postgres_failures_are_clear_on_the_flow_and_the_check() {
    let url = pg_url();
    let pg = PgScratch::new(&url, "sl_fail").await;
    unreachable_missing_and_syntax(
        "postgres",
        &url,
        &pg.t("no_such_table"),
        "SELECT id FROM WHERE x = 1",
        &["syntax error"],
    )
    .await;
    pg.drop().await;
}

#[tokio::test]
#[cfg_attr(not(sluice_mysql), ignore = "SLUICE_TEST_MYSQL_URL is not set")]
async fn mysql_failures_are_clear_on_the_flow_and_the_check() {
    let url = mysql_url();
    let my = MyScratch::new(&url, "sl_fail").await;
    unreachable_missing_and_syntax(
        "mysql",
        &my.url,
        "no_such_table",
        "SELECT id FROM WHERE x = 1",
        &["syntax"],
    )
    .await;
    my.drop().await;
}

/// A wrong password: the check and the flow say authentication failed, and the password
/// appears in no response and no line of the service log. Runs the real binary so that its
/// log can be read.
async fn wrong_password_is_never_shown(engine: &str, body_for: impl Fn(&str) -> Value, auth_words: &[&str]) {
    let wrong = format!("Wr0ng-Pa55-%s-{}", unique_suffix());
    let temp = tempfile::tempdir().unwrap();
    let (data, files, log) = (
        temp.path().join("data"),
        temp.path().join("files"),
        temp.path().join("server.log"),
    );
    std::fs::create_dir_all(&files).unwrap();
    let server = ServerProcess::start(&data, &files, &log, &[]).await;
    let mut bodies: Vec<String> = Vec::new();

    let mut body = body_for(&wrong);
    body["name"] = json!("wrong_pw");
    let created = server.post("/data-stores", &body).await.expect(201);
    assert_eq!(created.body["connection"]["password_set"], true);
    let store = created.id();
    bodies.push(created.body.to_string());
    let lite = server.sqlite_store("lite", "w.db").await;

    let check = server
        .post(&format!("/data-stores/{store}/check"), &json!({}))
        .await;
    bodies.push(check.body.to_string());
    assert_check_fails(&check, auth_words[0]);

    let input = server
        .post(
            "/flow-inputs",
            &json!({
                "name": "pw", "source_store_ids": [store], "target_store_id": lite,
                "sources": [{"name": "a", "store_id": store, "query": "SELECT 1 AS x"}],
                "outputs": [{"node": "a"}],
                "options": {"max_attempts": 1}
            }),
        )
        .await
        .expect(201);
    bodies.push(input.body.to_string());
    let flow = server.start_flow(input.id()).await;
    let done = server.wait_final(flow).await;
    assert_eq!(state(&done), "FAILED", "{done:#}");
    assert_mentions(
        &format!("{engine}: the wrong password's error"),
        &failed_task_error(&done, "a"),
        auth_words,
    );
    bodies.push(done.to_string());
    for path in [
        format!("/data-stores/{store}"),
        "/data-stores".to_string(),
        format!("/flow-inputs/{}", input.id()),
        "/flows".to_string(),
    ] {
        bodies.push(server.get(&path).await.expect(200).body.to_string());
    }
    let log_text = server.log_text();
    let encoded = wrong.replace('%', "%25");
    for (i, b) in bodies.iter().enumerate() {
        assert!(
            !b.contains(&wrong) && !b.contains(&encoded),
            "response {i} shows the password: {b}"
        );
    }
    assert!(
        !log_text.contains(&wrong) && !log_text.contains(&encoded),
        "the service log shows the password:\n{log_text}"
    );
}

#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn postgres_wrong_password_is_clear_and_never_shown() {
    let url = pg_url();
    let right = format!("Right-Pa55-{}", unique_suffix());
    pg_admin(
        &url,
        &format!(
            "DO $$ BEGIN CREATE ROLE sluice_pw_test LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             ALTER ROLE sluice_pw_test LOGIN PASSWORD '{right}'"
        ),
    )
    .await;
    let parts = DbParts::parse(&url);
    let mut right_url = reqwest::Url::parse(&url).unwrap();
    right_url.set_username("sluice_pw_test").unwrap();
    right_url.set_password(Some(&right)).unwrap();
    let mut wrong_url = right_url.clone();
    wrong_url.set_password(Some("not-the-password")).unwrap();
    {
        use sqlx::Connection;
        assert!(
            sqlx::PgConnection::connect(wrong_url.as_str()).await.is_err(),
            "PostgreSQL at {}:{} accepts any password for sluice_pw_test (pg_hba.conf trusts it); \
             add `host all sluice_pw_test 127.0.0.1/32 scram-sha-256` before the trust lines (.ci/run does)",
            parts.host,
            parts.port
        );
    }
    wrong_password_is_never_shown(
        "postgres",
        |pw| {
            let mut b = db_store_body("x", "postgres", &url);
            b["connection"]["user"] = json!("sluice_pw_test");
            b["connection"]["password"] = json!(pw);
            b
        },
        &["password authentication failed"],
    )
    .await;
    // The right password works: it was the password that failed.
    let app = spawn_app().await;
    let ok = app.postgres_store("right_pw", right_url.as_str()).await;
    assert_check_ok(&app.post(&format!("/data-stores/{ok}/check"), &json!({})).await);
}

#[tokio::test]
#[cfg_attr(not(sluice_mysql), ignore = "SLUICE_TEST_MYSQL_URL is not set")]
async fn mysql_wrong_password_is_clear_and_never_shown() {
    let url = mysql_url();
    let my = MyScratch::new(&url, "sl_pw").await;
    let right = format!("Right-Pa55-{}", unique_suffix());
    my.exec(&format!(
        "CREATE USER IF NOT EXISTS 'sluice_pw_test'@'%' IDENTIFIED BY '{right}'; \
         ALTER USER 'sluice_pw_test'@'%' IDENTIFIED BY '{right}'; \
         GRANT ALL ON {}.* TO 'sluice_pw_test'@'%'",
        my.db
    ))
    .await;
    let mut right_url = reqwest::Url::parse(&my.url).unwrap();
    right_url.set_username("sluice_pw_test").unwrap();
    right_url.set_password(Some(&right)).unwrap();
    wrong_password_is_never_shown(
        "mysql",
        |pw| {
            let mut b = db_store_body("x", "mysql", &my.url);
            b["connection"]["user"] = json!("sluice_pw_test");
            b["connection"]["password"] = json!(pw);
            b
        },
        &["access denied"],
    )
    .await;
    let app = spawn_app().await;
    let ok = app.mysql_store("right_pw", right_url.as_str()).await;
    assert_check_ok(&app.post(&format!("/data-stores/{ok}/check"), &json!({})).await);
    my.drop().await;
}

/// A long PostgreSQL read reports its rows against the planner's estimate, so the flow's
/// percent moves while the ingest is still running.
#[tokio::test]
#[cfg_attr(not(sluice_pg), ignore = "SLUICE_TEST_POSTGRES_URL is not set")]
async fn a_long_postgres_read_moves_the_percent_before_it_ends() {
    let url = pg_url();
    let pg = PgScratch::new(&url, "sl_progress").await;
    pg.exec(&format!(
        "CREATE TABLE {} AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 600000) g; \
         ANALYZE {}",
        pg.t("big"),
        pg.t("big")
    ))
    .await;
    let app = spawn_app_with(AppOptions::default().env("SLUICE__ENGINE__PERSIST_INTERVAL_MS", "20")).await;
    let src = app.postgres_store("pg", &url).await;
    let lake = app.parquet_store("lake", "out").await;
    let input = app
        .create_input(copy_flow("progress", src, &pg.t("big"), lake, "big"))
        .await;
    let flow = app.start_flow(input).await;
    let mut moving: Option<(f64, i64)> = None;
    let done = loop {
        let f = app.flow(flow).await;
        let ingest = task(&f, "src");
        let percent = f["output"]["progress"]["percent"].as_f64().unwrap();
        let rows = ingest["rows"].as_i64().unwrap_or(0);
        if ingest["state"] == "RUNNING" && rows > 0 && percent > 0.0 {
            moving.get_or_insert((percent, rows));
        }
        if is_final(state(&f)) {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(state(&done), "COMPLETED", "{done:#}");
    let (percent, rows) = moving.expect("the percent moved while the ingest was running");
    assert!(percent < 50.0 && rows < 600_000, "{percent}% at {rows} rows");
    pg.drop().await;
}
