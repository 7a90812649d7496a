//! The dashboard: a small single-page app (plain HTML, CSS and JS) compiled into the binary,
//! so it works offline and needs nothing from the internet. The pages carry no data; the
//! script reads everything through the API (with the bearer token the user types in, kept in
//! the browser's session storage) and follows flows through the events endpoint.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::error::AppError;

const INDEX_HTML: &str = include_str!("../../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../../assets/dashboard/app.css");
const FAVICON_SVG: &str = include_str!("../../assets/dashboard/favicon.svg");

/// Everything comes from this origin; nothing inline, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn page(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

#[utoipa::path(
    get, path = "/", operation_id = "dashboard", tag = "service",
    responses((status = 200, description = "The dashboard (HTML)", body = String, content_type = "text/html"))
)]
pub async fn index() -> HttpResponse {
    page("text/html; charset=utf-8", INDEX_HTML)
}

#[utoipa::path(
    get, path = "/assets/{file}", operation_id = "dashboard_asset", tag = "service",
    params(("file" = String, Path, description = "app.js, app.css or favicon.svg")),
    responses(
        (status = 200, description = "A dashboard asset: the script, the style sheet or the icon",
            content((String = "text/javascript"), (String = "text/css"), (String = "image/svg+xml"))),
        (status = 404, description = "No such asset", body = super::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn asset(file: web::Path<String>) -> Result<HttpResponse, AppError> {
    let file = file.into_inner();
    match file.as_str() {
        "app.js" => Ok(page("text/javascript; charset=utf-8", APP_JS)),
        "app.css" => Ok(page("text/css; charset=utf-8", APP_CSS)),
        "favicon.svg" => Ok(page("image/svg+xml", FAVICON_SVG)),
        _ => Err(AppError::not_found("asset", file)),
    }
}
