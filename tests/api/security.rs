//! Security: bearer tokens, loopback-only without them, passwords sealed at rest and never
//! shown, queries only.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::helpers::*;
use crate::process::ServerProcess;

#[tokio::test]
async fn with_tokens_every_api_request_needs_a_valid_bearer_token() {
    let app =
        spawn_app_with(AppOptions::default().env("SLUICE__AUTH__TOKENS", "alpha-token,beta-token")).await;
    let url = app.api("/flows");
    let none = app.client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["content-type"], "application/problem+json");
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = none.json().await.unwrap();
    assert_eq!(body["status"], 401);
    let wrong = app
        .client
        .get(&url)
        .bearer_auth("alpha-tokem")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let text = wrong.text().await.unwrap();
    assert!(
        !text.contains("alpha-tokem") && !text.contains("alpha-token"),
        "{text}"
    );
    for token in ["alpha-token", "beta-token"] {
        assert_eq!(
            app.client
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let post = app
        .client
        .post(app.api("/data-stores"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 401, "auth comes before validation");
    // Health and readiness stay open.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            app.client
                .get(format!("{}{path}", app.address))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
}

#[tokio::test]
async fn without_tokens_the_server_refuses_non_loopback_addresses_unless_told() {
    let temp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env("SLUICE__SERVER__HOST", "0.0.0.0")
        .env("SLUICE__SERVER__PORT", "0")
        .env("SLUICE__DATA_DIR", temp.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refusing to listen on 0.0.0.0 without authentication"),
        "{text}"
    );

    let files = temp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let log = temp.path().join("server.log");
    let server = ServerProcess::start(
        &temp.path().join("data2"),
        &files,
        &log,
        &[
            ("SLUICE__SERVER__HOST", "0.0.0.0"),
            ("SLUICE__AUTH__ALLOW_ANONYMOUS", "true"),
        ],
    )
    .await;
    server.get("/flows").await.expect(200);
    assert!(server.log_text().contains("WARN") && server.log_text().contains("no API tokens are configured"));
}

#[tokio::test]
async fn passwords_are_sealed_at_rest_and_never_returned() {
    let app = spawn_app().await;
    let password = "pw-never-leak-7f3a9";
    let reply = app
        .post(
            "/data-stores",
            &json!({"name": "pg", "kind": "relational_db", "engine": "postgres",
                    "connection": {"type": "db", "host": "127.0.0.1", "port": 1, "user": "u", "password": password, "db_name": "d"}}),
        )
        .await
        .expect(201);
    assert_eq!(reply.body["connection"]["password_set"], true);
    let id = reply.id();
    for path in [format!("/data-stores/{id}"), "/data-stores".to_string()] {
        let text = app
            .client
            .get(app.api(&path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains(password), "{path}: {text}");
        assert!(text.contains("password_set"));
    }
    // Not in the metadata database files (database, WAL) in any form.
    let mut found = false;
    for entry in std::fs::read_dir(&app.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            found |= bytes.windows(password.len()).any(|w| w == password.as_bytes());
        }
    }
    assert!(!found, "the password is stored in plain text");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(app.data_dir.join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key file must be private");
    }
}

#[tokio::test]
async fn transforms_that_are_not_queries_or_read_files_are_refused() {
    let app = spawn_app().await;
    let src = app.csv_store("raw", "in").await;
    let db = app.sqlite_store("w", "out/w.db").await;
    let forbidden = [
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO a VALUES (1)",
        "DROP TABLE a",
        "COPY a TO '/tmp/x.csv'",
        "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SET datafusion.execution.batch_size = 1",
        "SELECT 1; DROP TABLE a",
    ];
    for sql in forbidden {
        let reply = app
            .post(
                "/flow-inputs",
                &json!({"name": "x", "source_store_ids": [src], "target_store_id": db,
                        "sources": [{"name": "a", "store_id": src, "path": "a.csv"}],
                        "transforms": [{"name": "t", "sql": sql}]}),
            )
            .await
            .expect(422);
        assert_eq!(
            reply.error_paths(),
            ["transforms[0].sql"],
            "{sql}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn a_slow_client_is_disconnected_and_does_not_pin_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app =
        spawn_app_with(AppOptions::default().env("SLUICE__SERVER__CLIENT_REQUEST_TIMEOUT_S", "1")).await;
    let addr = app.address.trim_start_matches("http://").to_string();
    // Several connections that never finish their headers.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    // The server still answers others at once.
    app.client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    // And it hangs up on the slow ones after the timeout (408 or a closed connection).
    for mut s in slow {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a slow client was not disconnected");
        let text = String::from_utf8_lossy(&buf);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }
}
