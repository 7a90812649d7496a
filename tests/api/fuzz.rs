//! Hostile input: randomly mutated data stores and flow inputs never get a 5xx, and the server
//! stays healthy and keeps running flows.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use crate::helpers::*;

/// A JSON value of any shape, including awkward strings and numbers.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("../../../../etc/passwd")),
        Just(json!("SELECT * FROM t; DROP TABLE t")),
        Just(json!("\u{0}\u{202e}💥")),
        Just(json!("a".repeat(5000))),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Sets the value at a random path of `base` (or removes it) to a random value.
fn mutate(mut base: Value, path_choice: usize, remove: bool, value: Value) -> Value {
    let mut paths: Vec<Vec<String>> = Vec::new();
    fn walk(v: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(prefix.clone());
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let mut p = prefix.clone();
                    p.push(k.clone());
                    walk(v, p, out);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    let mut p = prefix.clone();
                    p.push(i.to_string());
                    walk(v, p, out);
                }
            }
            _ => {}
        }
    }
    walk(&base, vec![], &mut paths);
    let path = &paths[path_choice % paths.len()];
    if path.is_empty() {
        return value;
    }
    let (last, parent) = path.split_last().unwrap();
    let mut node = &mut base;
    for key in parent {
        node = match node {
            Value::Object(m) => m.get_mut(key).unwrap(),
            Value::Array(a) => &mut a[key.parse::<usize>().unwrap()],
            _ => unreachable!(),
        };
    }
    match node {
        Value::Object(m) if remove => {
            m.remove(last);
        }
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => a[last.parse::<usize>().unwrap()] = value,
        _ => {}
    }
    base
}

#[tokio::test]
async fn mutated_requests_never_get_a_server_error() {
    let app = spawn_app().await;
    app.write_file("in/a.csv", "x,y\n1,a\n2,b\n");
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let store_template = json!({"name": "s", "kind": "relational_db", "engine": "postgres",
        "connection": {"type": "db", "host": "127.0.0.1", "port": 5432, "user": "u", "password": "p", "db_name": "d"}});
    let input_template = json!({
        "name": "f", "source_store_ids": [src], "target_store_id": db,
        "sources": [{"name": "a", "store_id": src, "path": "a.csv", "csv": {"delimiter": ",", "columns": {"x": "int"}}}],
        "transforms": [{"name": "t", "sql": "SELECT x, y FROM a WHERE x > 0"}],
        "outputs": [{"node": "t", "table": "t", "mode": "replace"}],
        "options": {"max_parallel_tasks": 2, "max_attempts": 1}
    });
    let strategy = (0usize..64, any::<bool>(), any_json(), any::<bool>());
    let mut runner = TestRunner::new(Config {
        cases: 150,
        ..Config::default()
    });
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..150 {
        let (path, remove, value, which) = strategy.new_tree(&mut runner).unwrap().current();
        let (endpoint, body) = if which {
            (
                "/data-stores",
                mutate(store_template.clone(), path, remove, value),
            )
        } else {
            (
                "/flow-inputs",
                mutate(input_template.clone(), path, remove, value),
            )
        };
        let reply = app.post(endpoint, &body).await;
        assert!(
            reply.status.as_u16() < 500,
            "{endpoint} answered {} to {body}: {}",
            reply.status,
            reply.body
        );
        *statuses.entry(reply.status.as_u16()).or_insert(0) += 1;
        // A flow input that was accepted must also run without crashing the service.
        if reply.status == 201 && endpoint == "/flow-inputs" {
            let flow = app.start_flow(reply.id()).await;
            app.wait_final(flow).await;
        }
    }
    // Raw garbage bodies too.
    for raw in [
        "",
        "{",
        "[]",
        "null",
        "\"x\"",
        "{\"name\": }",
        "\u{feff}{}",
        "{\"a\":1}{\"b\":2}",
    ] {
        for endpoint in ["/data-stores", "/flow-inputs", "/flows"] {
            let reply = app.post_raw(endpoint, raw.to_string()).await;
            assert!(
                reply.status.as_u16() >= 400 && reply.status.as_u16() < 500,
                "{endpoint} {raw:?}: {}",
                reply.status
            );
        }
    }
    assert!(statuses.keys().any(|s| *s == 400 || *s == 422), "{statuses:?}");
    app.client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let flow = app.start_flow(app.create_input(input_template).await).await;
    assert_eq!(state(&app.wait_final(flow).await), "COMPLETED");
}
