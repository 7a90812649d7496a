//! Request extractors that answer with problem+json: a JSON body whose type errors name the
//! field's path, and query strings.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::{AppError, FieldError};

/// The largest accepted body, from `server.max_body_bytes`.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body. Malformed JSON and wrong field types are 400 with the field's path; a body
/// over the limit is 413.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<BodyLimit>>()
            .map(|l| l.0)
            .unwrap_or(8 * 1024 * 1024);
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let content_type_ok = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| ct.starts_with("application/json") || ct.contains("+json"))
            .unwrap_or(true);
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|n| n > limit) {
                return Err(AppError::PayloadTooLarge { limit });
            }
            if !content_type_ok {
                return Err(AppError::BadRequest {
                    detail: "the body must be JSON (Content-Type: application/json)".into(),
                    errors: vec![],
                });
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| AppError::BadRequest {
                    detail: format!("reading the body: {e}"),
                    errors: vec![],
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(AppError::PayloadTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(Json)
        })
    }
}

/// Parses JSON, reporting the path of the first offending field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::BadRequest {
            detail: "the body is empty; send a JSON object".into(),
            errors: vec![],
        });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde_path_to_error::deserialize::<_, T>(&mut de);
    if let Ok(v) = parsed {
        return match de.end() {
            Ok(()) => Ok(v),
            Err(e) => Err(AppError::BadRequest {
                detail: format!(
                    "malformed JSON at line {}, column {}: {}",
                    e.line(),
                    e.column(),
                    strip_position(&e.to_string())
                ),
                errors: vec![],
            }),
        };
    }
    match parsed {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let syntax = inner.is_syntax() || inner.is_eof();
            let message = strip_position(&inner.to_string());
            if syntax {
                Err(AppError::BadRequest {
                    detail: format!(
                        "malformed JSON at line {}, column {}: {message}",
                        inner.line(),
                        inner.column()
                    ),
                    errors: vec![],
                })
            } else {
                let path = if path == "." { String::new() } else { path };
                Err(AppError::BadRequest {
                    detail: format!(
                        "wrong JSON shape{}: {message}",
                        if path.is_empty() {
                            String::new()
                        } else {
                            format!(" at {path}")
                        }
                    ),
                    errors: vec![FieldError::new(path, message)],
                })
            }
        }
    }
}

fn strip_position(text: &str) -> String {
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text.to_string(),
    }
}

/// Query string errors as 400 problems.
pub fn query_error(err: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    AppError::BadRequest {
        detail: format!("invalid query string: {err}"),
        errors: vec![],
    }
    .into()
}

/// Path parameter errors (`/flows/abc`) as 404: no such resource.
pub fn path_error(err: actix_web::error::PathError, req: &HttpRequest) -> actix_web::Error {
    let _ = err;
    AppError::NotFound {
        what: "resource",
        id: req.path().to_string(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: u32,
        b: Vec<Inner>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        c: String,
    }

    #[test]
    fn type_errors_name_the_path() {
        match parse_json::<T>(br#"{"a": 1, "b": [{"c": "x"}, {"c": 5}]}"#) {
            Err(AppError::BadRequest { errors, .. }) => assert_eq!(errors[0].path, "b[1].c"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        match parse_json::<T>(b"{\"a\": 1,\n \"b\": [}") {
            Err(AppError::BadRequest { detail, errors }) => {
                assert!(detail.starts_with("malformed JSON at line 2"), "{detail}");
                assert!(errors.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_named() {
        match parse_json::<T>(br#"{"a": 1, "b": [], "zz": 1}"#) {
            Err(AppError::BadRequest { detail, .. }) => {
                assert!(detail.contains("unknown field `zz`"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }
}
