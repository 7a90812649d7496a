//! `/data-stores`: creation (201 + Location), exact shapes, never a password, lists and paging,
//! and every error path: 400, 404, 409, 422 for each validation rule.

use reqwest::Method;
use serde_json::{json, Value};

use crate::contract::*;
use crate::helpers::*;

const PASSWORD: &str = "s3cret-Pa55word-7f1c";

fn pg(name: &str) -> Value {
    json!({"name": name, "kind": "relational_db", "engine": "postgres",
           "connection": {"type": "db", "host": "127.0.0.1", "port": 5432, "user": "app",
                          "password": PASSWORD, "db_name": "shop"}})
}

fn file_store(name: &str, kind: &str, engine: &str, path: impl ToString) -> Value {
    json!({"name": name, "kind": kind, "engine": engine,
           "connection": {"type": "file", "path": path.to_string()}})
}

#[tokio::test]
async fn a_db_store_is_created_with_location_and_exact_shape_and_no_password() {
    let app = spawn_app().await;
    let created = app.post("/data-stores", &pg("shop_db")).await.expect(201);
    let id = created.id();
    assert_eq!(
        header(&created, "location"),
        format!("/api/v1.0/data-stores/{id}")
    );
    assert!(header(&created, "content-type").starts_with("application/json"));
    assert_keys(
        &created.body,
        &["id", "created_utc", "name", "kind", "engine", "connection"],
    );
    assert_timestamp(&created.body["created_utc"]);
    let mut expected = json!({
        "id": id, "created_utc": created.body["created_utc"], "name": "shop_db",
        "kind": "relational_db", "engine": "postgres",
        "connection": {"type": "db", "host": "127.0.0.1", "port": 5432, "user": "app",
                       "password_set": true, "db_name": "shop"}
    });
    assert_eq!(created.body, expected);
    assert_no_secret(&created, PASSWORD);

    // GET by id equals the creation response; the Location leads there.
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
    assert_no_secret(&fetched, PASSWORD);
    let list = app.get("/data-stores").await.expect(200);
    assert_eq!(
        list.body["items"][0], created.body,
        "list items are the same view"
    );
    assert_no_secret(&list, PASSWORD);

    // MySQL without a port gets 3306; no password -> password_set false; an empty one too.
    let my = app
        .post(
            "/data-stores",
            &json!({"name": "maria", "kind": "relational_db", "engine": "mysql",
                    "connection": {"type": "db", "host": "db.internal", "user": "u", "db_name": "d"}}),
        )
        .await
        .expect(201);
    expected = json!({"type": "db", "host": "db.internal", "port": 3306, "user": "u",
                      "password_set": false, "db_name": "d"});
    assert_eq!(my.body["connection"], expected);
    let empty = app
        .post(
            "/data-stores",
            &json!({"name": "nopw", "kind": "relational_db", "engine": "postgres",
                    "connection": {"type": "db", "host": "h", "port": 6543, "user": "u",
                                   "password": "", "db_name": "d"}}),
        )
        .await
        .expect(201);
    assert_eq!(empty.body["connection"]["password_set"], false);
    assert_eq!(empty.body["connection"]["port"], 6543);

    // The password is not stored in clear in the metadata database either.
    for entry in std::fs::read_dir(&app.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()),
                "password in clear in {}",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn every_kind_and_engine_pair_of_the_table_is_accepted_with_its_resolved_path() {
    let app = spawn_app().await;
    std::fs::create_dir_all(app.file("raw")).unwrap();
    app.write_file("single.parquet", b"PAR1");
    let root = app.files.canonicalize().unwrap();
    let cases = [
        (
            "sqlite_db",
            "relational_db",
            "sqlite",
            app.file("db/w.db"),
            root.join("db/w.db"),
        ),
        (
            "lake",
            "columnar_db",
            "parquet",
            app.file("lake"),
            root.join("lake"),
        ),
        ("raw_csv", "file", "csv", app.file("raw"), root.join("raw")),
        (
            "raw_pq",
            "file",
            "parquet",
            app.file("single.parquet"),
            root.join("single.parquet"),
        ),
        // `.` components are normalized away; not-yet-existing directories are fine.
        (
            "dotted",
            "file",
            "csv",
            app.files.join("./raw/./new/dir"),
            root.join("raw/new/dir"),
        ),
    ];
    for (name, kind, engine, path, resolved) in cases {
        let created = app
            .post("/data-stores", &file_store(name, kind, engine, path.display()))
            .await
            .expect(201);
        let id = created.id();
        assert_eq!(
            header(&created, "location"),
            format!("/api/v1.0/data-stores/{id}")
        );
        assert_timestamp(&created.body["created_utc"]);
        assert_eq!(
            created.body,
            json!({"id": id, "created_utc": created.body["created_utc"], "name": name,
                   "kind": kind, "engine": engine,
                   "connection": {"type": "file", "path": resolved.display().to_string()}})
        );
        assert_eq!(
            app.get(&format!("/data-stores/{id}")).await.expect(200).body,
            created.body
        );
    }
}

#[tokio::test]
async fn lists_are_newest_first_with_default_limit_and_keyset_paging() {
    let app = spawn_app().await;
    let empty = app.get("/data-stores").await.expect(200);
    assert_eq!(empty.body, json!({"items": [], "next_before_id": null}));

    let mut created = Vec::new();
    for i in 0..55 {
        created.push(app.create_store(pg(&format!("store-{i:02}"))).await);
    }
    let newest_first: Vec<i64> = created.iter().rev().copied().collect();

    // Default limit 50.
    let first = app.get("/data-stores").await.expect(200);
    assert_keys(&first.body, &["items", "next_before_id"]);
    assert_eq!(ids(&first.body), newest_first[..50]);
    assert_eq!(first.body["next_before_id"], newest_first[49]);
    for item in first.body["items"].as_array().unwrap() {
        assert_no_secret(&app.get(&format!("/data-stores/{}", item["id"])).await, PASSWORD);
        assert_eq!(item["connection"]["password_set"], true);
    }
    assert_no_secret(&first, PASSWORD);

    // Walking every page with several page sizes: no gaps, no duplicates, newest first.
    for limit in [1, 7, 11, 55, 500] {
        assert_eq!(
            walk(&app, "/data-stores", "", limit).await,
            newest_first,
            "limit {limit}"
        );
    }
    // before_id past the newest and in the middle.
    let page = app
        .get(&format!("/data-stores?before_id={}&limit=3", newest_first[10]))
        .await
        .expect(200);
    assert_eq!(ids(&page.body), newest_first[11..14]);
    let page = app
        .get(&format!("/data-stores?before_id={}", newest_first[0] + 1000))
        .await
        .expect(200);
    assert_eq!(ids(&page.body), newest_first[..50]);
    let page = app
        .get(&format!("/data-stores?before_id={}", newest_first[54]))
        .await
        .expect(200);
    assert_eq!(page.body, json!({"items": [], "next_before_id": null}));

    // Out of range: 422 naming `limit`; not a number: 400.
    for bad in ["0", "501", "100000"] {
        let r = app.get(&format!("/data-stores?limit={bad}")).await;
        assert_invalid(&r, &["limit"]);
        assert_message(&r, "limit", &["1 to 500"]);
    }
    for bad in ["limit=abc", "limit=", "before_id=x", "limit=1.5", "limti=5"] {
        let r = app.get(&format!("/data-stores?{bad}")).await;
        assert_problem(&r, 400);
    }
}

#[tokio::test]
async fn the_500_limit_is_served_in_full() {
    let app = spawn_app().await;
    // 501 stores, created a few at a time.
    let mut all = Vec::new();
    for chunk in (0..501).collect::<Vec<_>>().chunks(25) {
        let futures = chunk.iter().map(|i| app.create_store(pg(&format!("s{i}"))));
        all.extend(futures::future::join_all(futures).await);
    }
    all.sort_unstable();
    all.reverse();
    let page = app.get("/data-stores?limit=500").await.expect(200);
    assert_eq!(ids(&page.body), all[..500]);
    assert_eq!(page.body["next_before_id"], all[499]);
    let rest = app
        .get(&format!("/data-stores?limit=500&before_id={}", all[499]))
        .await
        .expect(200);
    assert_eq!(ids(&rest.body), all[500..]);
    assert!(rest.body["next_before_id"].is_null());
}

#[tokio::test]
async fn malformed_bodies_are_400_problems() {
    let app = spawn_app().await;

    // Malformed JSON: line and column in the detail, no errors.
    let r = post_text(&app, "/data-stores", "{\"name\": \"a\",\n  \"kind\": }").await;
    assert_problem(&r, 400);
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains("line 2, column 11"), "{detail}");
    assert_eq!(r.body["errors"], json!([]));
    let r = post_text(&app, "/data-stores", "{\"name\": \"a\"").await;
    assert_problem(&r, 400);
    assert!(
        r.body["detail"].as_str().unwrap().contains("line 1"),
        "{:#}",
        r.body
    );
    // Trailing garbage after a valid object.
    let mut trailing = pg("trail").to_string();
    trailing.push_str(" }");
    let r = post_text(&app, "/data-stores", &trailing).await;
    assert_problem(&r, 400);
    assert!(
        r.body["detail"].as_str().unwrap().contains("line 1, column"),
        "{:#}",
        r.body
    );

    // Wrong field types: the path names the field.
    let mut body = pg("types");
    body["connection"]["port"] = json!("5432");
    let r = app.post("/data-stores", &body).await;
    assert_problem(&r, 400);
    assert_eq!(r.error_paths(), ["connection.port"]);
    body["connection"]["port"] = json!(70000);
    let r = app.post("/data-stores", &body).await;
    assert_problem(&r, 400);
    assert_eq!(r.error_paths(), ["connection.port"]);
    let mut body = pg("types");
    body["name"] = json!(5);
    let r = app.post("/data-stores", &body).await;
    assert_problem(&r, 400);
    assert_eq!(r.error_paths(), ["name"]);
    let mut body = pg("types");
    body["connection"] = json!("postgres://app:pw@host/db");
    let r = app.post("/data-stores", &body).await;
    assert_problem(&r, 400);
    assert_eq!(r.error_paths(), ["connection"]);
    assert_no_secret(&r, "app:pw");

    // Unknown fields, top level and nested.
    let mut body = pg("typo");
    body["conection"] = json!({});
    let r = app.post("/data-stores", &body).await;
    assert_problem(&r, 400);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `conection`"),
        "{:#}",
        r.body
    );
    let mut body = pg("typo");
    body["connection"]["passwd"] = json!("x");
    let r = app.post("/data-stores", &body).await;
    assert_problem(&r, 400);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `passwd`"),
        "{:#}",
        r.body
    );
    assert_eq!(r.error_paths(), ["connection.passwd"]);

    // Missing required field.
    let r = app
        .post(
            "/data-stores",
            &json!({"name": "x", "kind": "file", "engine": "csv"}),
        )
        .await;
    assert_problem(&r, 400);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("missing field `connection`"),
        "{:#}",
        r.body
    );

    // Empty, blank, not an object, not JSON at all.
    for text in ["", "   \n", "[]", "null", "42", "\"store\""] {
        let r = post_text(&app, "/data-stores", text).await;
        assert_problem(&r, 400);
    }
    let r = send(
        &app,
        Method::POST,
        &app.api("/data-stores"),
        Some("text/plain"),
        Some(pg("plain").to_string().into_bytes()),
    )
    .await;
    assert_problem(&r, 400);
    assert!(
        r.body["detail"].as_str().unwrap().contains("application/json"),
        "{:#}",
        r.body
    );
    let r = send(
        &app,
        Method::POST,
        &app.api("/data-stores"),
        Some("application/x-www-form-urlencoded"),
        Some(b"name=x&kind=file".to_vec()),
    )
    .await;
    assert_problem(&r, 400);

    // application/json with a charset and +json types are JSON.
    let r = send(
        &app,
        Method::POST,
        &app.api("/data-stores"),
        Some("application/json; charset=utf-8"),
        Some(pg("charset").to_string().into_bytes()),
    )
    .await;
    assert_eq!(r.status, 201, "{:#}", r.body);

    // Nothing was created by the failed requests.
    let names: Vec<String> = app.get("/data-stores").await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["charset"]);
}

#[tokio::test]
async fn a_password_of_the_wrong_type_is_not_echoed() {
    let app = spawn_app().await;
    for password in [json!(987654321), json!(true), json!(12.75)] {
        let mut body = pg("pw");
        body["connection"]["password"] = password.clone();
        let r = app.post("/data-stores", &body).await;
        assert_problem(&r, 400);
        assert_eq!(r.error_paths(), ["connection.password"]);
        assert_no_secret(&r, &password.to_string());
    }
}

#[tokio::test]
async fn unknown_and_non_numeric_ids_are_404_problems() {
    let app = spawn_app().await;
    let id = app.create_store(pg("only")).await;
    for path in [
        format!("/data-stores/{}", id + 1),
        "/data-stores/0".to_string(),
        "/data-stores/-1".to_string(),
        "/data-stores/abc".to_string(),
        "/data-stores/1.5".to_string(),
        "/data-stores/99999999999999999999999".to_string(),
        format!("/data-stores/{id}/extra"),
    ] {
        let r = app.get(&path).await;
        assert_problem(&r, 404);
        assert_eq!(r.body["errors"], json!([]));
    }
    let r = app.get(&format!("/data-stores/{}", id + 1)).await;
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("data store {}", id + 1)),
        "{:#}",
        r.body
    );
}

#[tokio::test]
async fn a_duplicate_name_is_a_409_and_leaves_the_first_store_unchanged() {
    let app = spawn_app().await;
    let first = app.post("/data-stores", &pg("shop_db")).await.expect(201);
    let mut again = file_store("shop_db", "file", "csv", app.files.display());
    let r = app.post("/data-stores", &again).await;
    assert_problem(&r, 409);
    assert!(
        r.body["detail"].as_str().unwrap().contains("shop_db"),
        "{:#}",
        r.body
    );
    assert_no_secret(&r, PASSWORD);
    let r = app.post("/data-stores", &pg("shop_db")).await;
    assert_problem(&r, 409);
    assert_no_secret(&r, PASSWORD);
    assert_eq!(
        app.get(&format!("/data-stores/{}", first.id())).await.body,
        first.body
    );
    assert_eq!(ids(&app.get("/data-stores").await.body), [first.id()]);
    // Another name is fine.
    again["name"] = json!("shop_db2");
    app.post("/data-stores", &again).await.expect(201);
}

/// Creations racing for one name may all pass the check for a taken name: the unique index
/// lets one in, and every other one is a 409 (told by the driver's error code), never a 500.
#[tokio::test]
async fn creations_racing_for_one_name_make_one_store_and_409s() {
    let app = spawn_app().await;
    let body = pg("raced_db");
    let replies = futures::future::join_all((0..8).map(|_| app.post("/data-stores", &body))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    for r in replies.iter().filter(|r| r.status.as_u16() != 201) {
        assert_problem(r, 409);
        assert_no_secret(r, PASSWORD);
    }
    assert_eq!(ids(&app.get("/data-stores").await.body).len(), 1);
}

/// Posts a data store and asserts a 422 with exactly `expected`; never the password.
async fn rejects(app: &TestApp, body: Value, expected: &[(&str, &str)]) -> Reply {
    let r = assert_rejected(app, "/data-stores", &body, expected).await;
    assert_no_secret(&r, PASSWORD);
    r
}

#[tokio::test]
async fn each_validation_rule_is_a_422_naming_its_field() {
    let app = spawn_app().await;
    let dir = app.files.join("d");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display().to_string();

    // Names.
    for bad in ["1abc", "", "has space", "bad!", "_under", "ünï", &"a".repeat(64)] {
        let mut body = pg("x");
        body["name"] = json!(bad);
        rejects(&app, body, &[("name", "invalid name")]).await;
    }
    let mut ok = pg("x");
    ok["name"] = json!(format!("A{}", "b-_9".repeat(15) + "zz"));
    app.post("/data-stores", &ok).await.expect(201);

    // Kind and engine.
    let mut body = file_store("k", "nosql", "csv", &d);
    rejects(
        &app,
        body.clone(),
        &[("kind", "relational_db, columnar_db or file")],
    )
    .await;
    body = file_store("k", "file", "oracle", &d);
    rejects(&app, body, &[("engine", "unknown engine \"oracle\"")]).await;
    body = file_store("k", "File", "CSV", &d);
    rejects(
        &app,
        body,
        &[("kind", "unknown kind"), ("engine", "unknown engine")],
    )
    .await;
    for (kind, engine, allowed) in [
        ("file", "sqlite", "csv or parquet"),
        ("columnar_db", "csv", "parquet or duckdb"),
        ("relational_db", "parquet", "postgres or mysql or sqlite"),
    ] {
        rejects(
            &app,
            file_store("k", kind, engine, &d),
            &[(
                "engine",
                &format!("engine {engine} does not fit kind {kind}: use {allowed}"),
            )],
        )
        .await;
    }
    rejects(
        &app,
        file_store("k", "columnar_db", "duckdb", app.file("x.duckdb").display()),
        &[("engine", "duckdb is not built into this server")],
    )
    .await;

    // Connection type.
    rejects(
        &app,
        json!({"name": "k", "kind": "relational_db", "engine": "postgres",
               "connection": {"type": "file", "path": d}}),
        &[("connection.type", "engine postgres needs a connection of type db")],
    )
    .await;
    rejects(
        &app,
        json!({"name": "k", "kind": "relational_db", "engine": "sqlite",
               "connection": {"type": "db", "host": "h", "port": 1, "user": "u", "db_name": "d"}}),
        &[("connection.type", "engine sqlite needs a connection of type file")],
    )
    .await;
    rejects(
        &app,
        json!({"name": "k", "kind": "file", "engine": "csv", "connection": {"type": "ftp", "path": d}}),
        &[(
            "connection.type",
            "unknown connection type \"ftp\": use db or file",
        )],
    )
    .await;

    // Required db fields, blank ones, too long ones, port 0.
    rejects(
        &app,
        json!({"name": "k", "kind": "relational_db", "engine": "postgres",
               "connection": {"type": "db", "password": PASSWORD}}),
        &[
            ("connection.host", "is required"),
            ("connection.user", "is required"),
            ("connection.db_name", "is required"),
        ],
    )
    .await;
    rejects(
        &app,
        json!({"name": "k", "kind": "relational_db", "engine": "mysql",
               "connection": {"type": "db", "host": "  ", "user": "", "db_name": "x".repeat(256)}}),
        &[
            ("connection.host", "is required"),
            ("connection.user", "is required"),
            ("connection.db_name", "at most 255 characters"),
        ],
    )
    .await;
    let mut body = pg("k");
    body["connection"]["port"] = json!(0);
    rejects(&app, body, &[("connection.port", "between 1 and 65535")]).await;
    let mut body = pg("k");
    body["connection"]["password"] = json!("p".repeat(1025));
    rejects(&app, body, &[("connection.password", "at most 1024 characters")]).await;

    // Fields that do not belong to the connection type.
    let mut body = pg("k");
    body["connection"]["path"] = json!(d);
    rejects(
        &app,
        body,
        &[("connection.path", "not allowed in a db connection")],
    )
    .await;
    rejects(
        &app,
        json!({"name": "k", "kind": "file", "engine": "csv",
               "connection": {"type": "file", "path": d, "host": "h", "port": 1, "user": "u",
                              "password": PASSWORD, "db_name": "x"}}),
        &[
            ("connection.host", "not allowed in a file connection"),
            ("connection.port", "not allowed in a file connection"),
            ("connection.user", "not allowed in a file connection"),
            ("connection.password", "not allowed in a file connection"),
            ("connection.db_name", "not allowed in a file connection"),
        ],
    )
    .await;

    // Paths: missing, blank, outside the roots, relative (outside), with `..`.
    for conn in [json!({"type": "file"}), json!({"type": "file", "path": "  "})] {
        rejects(
            &app,
            json!({"name": "k", "kind": "file", "engine": "csv", "connection": conn}),
            &[("connection.path", "is required")],
        )
        .await;
    }
    let outside = app.data_dir.display().to_string();
    for path in ["/etc", "/", outside.as_str(), "relative/dir", "/tmp"] {
        rejects(
            &app,
            file_store("k", "file", "csv", path),
            &[("connection.path", "outside the allowed roots")],
        )
        .await;
    }
    for path in [format!("{d}/../../etc"), format!("{d}/../d"), format!("{d}/..")] {
        rejects(
            &app,
            file_store("k", "file", "csv", &path),
            &[("connection.path", "may not contain '..'")],
        )
        .await;
    }

    // Nothing was stored by any rejected request.
    assert_eq!(ids(&app.get("/data-stores").await.body).len(), 1);
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_inside_the_root_cannot_lead_outside_it() {
    let app = spawn_app().await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.csv"), "a\n1\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), app.file("escape")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.csv"), app.file("secret.csv")).unwrap();
    for path in [
        app.file("escape"),
        app.file("escape/secret.csv"),
        app.file("escape/not/yet"),
        app.file("secret.csv"),
    ] {
        rejects(
            &app,
            file_store("k", "file", "csv", path.display()),
            &[("connection.path", "outside the allowed roots")],
        )
        .await;
    }
    // A link that stays inside the root resolves to its target.
    std::fs::create_dir_all(app.file("real")).unwrap();
    std::os::unix::fs::symlink(app.file("real"), app.file("alias")).unwrap();
    let r = app
        .post(
            "/data-stores",
            &file_store("k", "file", "csv", app.file("alias").display()),
        )
        .await
        .expect(201);
    assert_eq!(
        r.body["connection"]["path"],
        app.file("real").canonicalize().unwrap().display().to_string()
    );
}

#[tokio::test]
async fn every_problem_is_reported_at_once() {
    let app = spawn_app().await;
    let r = rejects(
        &app,
        json!({"name": "9 lives", "kind": "file", "engine": "postgres",
               "connection": {"type": "file", "host": "x", "port": 0, "user": "u",
                              "password": PASSWORD, "db_name": "d"}}),
        &[
            ("name", "invalid name"),
            ("engine", "does not fit kind file"),
            ("connection.type", "needs a connection of type db"),
            ("connection.host", "not allowed"),
            ("connection.port", "not allowed"),
            ("connection.user", "not allowed"),
            ("connection.password", "not allowed"),
            ("connection.db_name", "not allowed"),
            ("connection.path", "is required"),
        ],
    )
    .await;
    assert_eq!(r.body["title"], "Invalid request");

    // A path outside the roots is reported together with the other problems.
    rejects(
        &app,
        json!({"name": "", "kind": "file", "engine": "csv",
               "connection": {"type": "file", "path": "/etc", "user": "u"}}),
        &[
            ("name", "invalid name"),
            ("connection.user", "not allowed in a file connection"),
            ("connection.path", "outside the allowed roots"),
        ],
    )
    .await;
}
