//! Service endpoints, unknown routes (404) and methods (405), body limits (413) and bearer
//! tokens (401).

use futures::StreamExt;
use reqwest::Method;
use serde_json::json;

use crate::contract::*;
use crate::helpers::*;

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let app = spawn_app().await;
    let r = get_root(&app, "/healthz").await.expect(200);
    assert_eq!(r.body, json!("ok"));
    assert!(header(&r, "content-type").starts_with("text/plain"));
    let r = get_root(&app, "/readyz").await.expect(200);
    assert!(header(&r, "content-type").starts_with("text/plain"));
}

#[tokio::test]
async fn unknown_routes_are_404_problems() {
    let app = spawn_app().await;
    for path in [
        "/nope",
        "/api",
        "/api/v1.0",
        "/api/v1.0/",
        "/api/v1.0/nope",
        "/api/v2.0/data-stores",
        "/api/v1.0/data-stores/1/connection",
        "/api/v1.0/flows/cancel",
        "/healthz/extra",
    ] {
        let r = get_root(&app, path).await;
        assert_problem(&r, 404);
        assert_eq!(r.body["errors"], json!([]));
        assert!(
            r.body["detail"].as_str().unwrap().contains(path),
            "{path}: {:#}",
            r.body
        );
    }
    let r = send(
        &app,
        Method::POST,
        &format!("{}/api/v1.0/nope", app.address),
        Some("application/json"),
        Some(b"{}".to_vec()),
    )
    .await;
    assert_problem(&r, 404);
}

#[tokio::test]
async fn methods_a_path_does_not_serve_are_405_problems_with_allow() {
    // A known path asked with another method is 405 with `Allow` naming the methods it serves
    // (no PUT/PATCH/DELETE exist at all); it never reaches a handler.
    let app = spawn_app().await;
    let id = app
        .create_store(
            json!({"name": "pg", "kind": "relational_db", "engine": "postgres",
                             "connection": {"type": "db", "host": "h", "user": "u", "db_name": "d"}}),
        )
        .await;
    let mut served: Vec<(&str, Vec<String>)> = Vec::new();
    for (method, path) in sluice::api::ROUTES {
        match served.iter_mut().find(|(p, _)| p == path) {
            Some((_, methods)) => methods.push(method.to_uppercase()),
            None => served.push((path, vec![method.to_uppercase()])),
        }
    }
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
    ];
    for (pattern, allowed) in &served {
        let path = pattern
            .replace("{id}", &id.to_string())
            .replace("{file}", "app.js");
        for method in methods.iter().filter(|m| !allowed.contains(&m.to_string())) {
            let r = send(
                &app,
                method.clone(),
                &format!("{}{path}", app.address),
                Some("application/json"),
                Some(b"{}".to_vec()),
            )
            .await;
            assert_eq!(r.status, 405, "{method} {path}: {:#}", r.body);
            assert_eq!(header(&r, "allow"), allowed.join(", "), "{method} {path}");
            if method == Method::HEAD {
                continue; // no body
            }
            assert_problem(&r, 405);
            let detail = r.body["detail"].as_str().unwrap();
            assert!(
                detail.contains(&format!("{method} is not allowed on {path}")),
                "{detail}"
            );
        }
    }
    // An unknown path stays 404, whatever the method.
    let r = send(
        &app,
        Method::DELETE,
        &format!("{}/api/v1.0/stores/{id}", app.address),
        None,
        None,
    )
    .await;
    assert_problem(&r, 404);
    // The store is still there, unchanged.
    app.get(&format!("/data-stores/{id}")).await.expect(200);
}

fn padded_store(total: usize) -> Vec<u8> {
    let head = json!({"name": "big", "kind": "file", "engine": "csv",
                      "connection": {"type": "file", "path": "x"}})
    .to_string();
    // Whitespace inside the object keeps it valid JSON of exactly `total` bytes.
    let mut body = head[..head.len() - 1].to_string();
    body.push_str(&" ".repeat(total - head.len()));
    body.push('}');
    assert_eq!(body.len(), total);
    body.into_bytes()
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_problems() {
    let app = spawn_app_with(AppOptions::default().env("SLUICE__SERVER__MAX_BODY_BYTES", 2048)).await;
    for endpoint in ["/data-stores", "/flow-inputs", "/flows"] {
        let r = app.post_raw(endpoint, padded_store(4096)).await;
        assert_problem(&r, 413);
        assert!(
            r.body["detail"].as_str().unwrap().contains("2048 bytes"),
            "{:#}",
            r.body
        );
        let r = app.post_raw(endpoint, padded_store(2049)).await;
        assert_problem(&r, 413);
    }
    // Without a Content-Length (chunked), the limit holds while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        padded_store(3000).chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let stream = futures::stream::iter(chunks).boxed();
    let r = app
        .client
        .post(app.api("/data-stores"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("request");
    let r = into_reply(r).await;
    assert_problem(&r, 413);
    // Exactly at the limit is read and validated (the relative path is outside the roots).
    let r = app.post_raw("/data-stores", padded_store(2048)).await;
    assert_invalid(&r, &["connection.path"]);
}

#[tokio::test]
async fn with_tokens_the_api_needs_a_bearer_token_but_health_does_not() {
    let token = "t0ken-Alpha-93a1";
    let app =
        spawn_app_with(AppOptions::default().env("SLUICE__AUTH__TOKENS", format!("{token},second-token")))
            .await;
    get_root(&app, "/healthz").await.expect(200);
    get_root(&app, "/readyz").await.expect(200);
    for path in ["/data-stores", "/flow-inputs", "/flows", "/flows/1", "/nope"] {
        let r = app.get(path).await;
        assert_problem(&r, 401);
        assert_eq!(header(&r, "www-authenticate"), "Bearer");
    }
    let wrong = "wrong-token-XYZ";
    for value in [
        format!("Bearer {wrong}"),
        format!("Basic {wrong}"),
        wrong.to_string(),
        "Bearer ".to_string(),
    ] {
        let r = into_reply(
            app.client
                .get(app.api("/data-stores"))
                .header("authorization", value.clone())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_problem(&r, 401);
        assert_no_secret(&r, wrong);
        assert_no_secret(&r, token);
    }
    for good in [token, "second-token"] {
        let r = into_reply(
            app.client
                .get(app.api("/data-stores"))
                .bearer_auth(good)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{:#}", r.body);
        assert_no_secret(&r, token);
    }
    // A POST without a token is refused before its body is looked at.
    let r = app.post("/data-stores", &json!({"name": "x"})).await;
    assert_problem(&r, 401);
}
