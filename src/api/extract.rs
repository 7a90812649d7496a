//! Request extractors that answer with problem+json: a JSON body whose type errors name the
//! field's path, and query strings.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures::StreamExt;
use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

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

/// Parses JSON, reporting the path of the first offending field. Two steps: the text into a
/// `StrictJson` (syntax errors, with line and column, and keys named twice), then that into `T`
/// (wrong types, unknown or missing fields).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::BadRequest {
            detail: "the body is empty; send a JSON object".into(),
            errors: vec![],
        });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let document = serde_path_to_error::deserialize::<_, StrictJson>(&mut de);
    let document = match document {
        Ok(StrictJson(value)) => match de.end() {
            Ok(()) => value,
            Err(e) => return Err(malformed(&e)),
        },
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(malformed(&inner));
            }
            return Err(wrong_shape(path, &inner));
        }
    };
    // JSON text carries a NUL only as the escape `\u0000`: most bodies need no walk.
    let nul = memchr::memmem::find(body, br"\u0000").and_then(|_| nul_path(&document, ""));
    let request = serde_path_to_error::deserialize::<_, T>(document).map_err(|e| {
        let path = e.path().to_string();
        wrong_shape(path, &e.into_inner())
    })?;
    match nul {
        Some(path) => Err(AppError::Invalid(vec![FieldError::new(
            path,
            "text may not contain the NUL character (\\u0000)",
        )])),
        None => Ok(request),
    }
}

fn malformed(e: &serde_json::Error) -> AppError {
    AppError::BadRequest {
        detail: format!(
            "malformed JSON at line {}, column {}: {}",
            e.line(),
            e.column(),
            without_values(&strip_position(&e.to_string()))
        ),
        errors: vec![],
    }
}

fn wrong_shape(path: String, e: &serde_json::Error) -> AppError {
    let message = without_values(&strip_position(&e.to_string()));
    let path = if path == "." { String::new() } else { path };
    AppError::BadRequest {
        detail: format!(
            "wrong JSON shape{}: {message}",
            if path.is_empty() {
                String::new()
            } else {
                format!(" at {path}")
            }
        ),
        errors: vec![FieldError::new(path, message)],
    }
}

/// A JSON document as the typed step reads it. An object that names a key twice is refused, as
/// the request types themselves would refuse it (a plain `Value` keeps the last one silently).
/// A number without a fractional part (`2.0`, `1e3`) is an integer, as JSON Schema's `integer`
/// (and so the OpenAPI document) counts it, as long as a double holds it exactly (up to 2^53).
struct StrictJson(Value);

impl<'de> Deserialize<'de> for StrictJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        Ok(if v.fract() == 0.0 && v.abs() <= EXACT {
            if v < 0.0 {
                Value::from(v as i64)
            } else {
                Value::from(v as u64)
            }
        } else {
            // serde_json reads no NaN or infinity, so this is always a number.
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
        })
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            let StrictJson(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// No text of a request may hold the NUL character: no name, SQL, host or path has a use for
/// it, and PostgreSQL (a metadata database, a source or target) cannot store it in text. The
/// path of the first text that holds one (`checks[0].to_column`; a key's object for a key).
fn nul_path(value: &Value, path: &str) -> Option<String> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(s) => s.contains('\0').then(|| path.to_string()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(path.to_string())
            } else {
                nul_path(item, &join(key))
            }
        }),
        _ => None,
    }
}

/// Serde's type errors quote the offending value (`invalid type: string "postgres://u:pw@h"`,
/// ``invalid type: integer `123456` ``). That value may be a password or a connection string,
/// and error bodies never carry those, so only its kind is kept; the path says where it was.
fn without_values(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        // The expected part comes last and is ours; the value is whatever precedes it.
        let Some(at) = rest.rfind(", expected ") else {
            return prefix.trim_end_matches(": ").to_string();
        };
        let (unexpected, expected) = rest.split_at(at);
        // `integer `5``, `string "x"`, `character 'c'`: the kind, then the quoted value.
        let kind = [" `", " \"", " '"]
            .iter()
            .filter_map(|quote| unexpected.find(quote))
            .min()
            .map_or(unexpected, |i| &unexpected[..i]);
        return format!("{prefix}{kind}{expected}");
    }
    message.to_string()
}

fn strip_position(text: &str) -> String {
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text.to_string(),
    }
}

/// A query string. Errors are 400 problems naming the parameter.
pub struct Query<T>(pub T);

impl<T> std::ops::Deref for Query<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Query<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(parse_query(req.query_string()).map(Query))
    }
}

pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, AppError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.into_inner().to_string();
        let detail = if path.is_empty() {
            format!("invalid query string: {message}")
        } else {
            format!("invalid query parameter {path}: {message}")
        };
        AppError::BadRequest {
            detail,
            errors: vec![FieldError::new(path, message)],
        }
    })
}

/// Query string errors from actix's own extractor (not used by our handlers) as 400 problems.
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
    fn the_nul_character_is_refused_with_its_path() {
        let invalid = |body: &[u8]| match parse_json::<Value>(body) {
            Err(AppError::Invalid(errors)) => {
                assert!(errors[0].message.contains("NUL character"), "{errors:?}");
                errors[0].path.clone()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            invalid(br#"{"connection": {"db_name": "a\u0000b"}}"#),
            "connection.db_name"
        );
        assert_eq!(
            invalid(br#"{"checks": [{"x": 1}, {"to_column": "\u0000"}]}"#),
            "checks[1].to_column"
        );
        assert_eq!(invalid(br#"{"a": {"k\u0000": 1}}"#), "a");
        assert!(parse_json::<Value>(br#"{"sql": "SELECT '\\0'"}"#).is_ok());
        // A body of the wrong shape says so first.
        assert!(matches!(
            parse_json::<T>(br#"{"a": "\u0000", "b": 5}"#),
            Err(AppError::BadRequest { .. })
        ));
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
    fn type_errors_never_echo_the_value() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Conn {
            password: Option<String>,
            port: Option<u16>,
            inner: Option<Inner>,
        }
        for (body, kept) in [
            (
                r#"{"password": 987654321}"#,
                "invalid type: integer, expected a string",
            ),
            (
                r#"{"password": 12.75}"#,
                "invalid type: floating point, expected a string",
            ),
            (
                r#"{"password": true}"#,
                "invalid type: boolean, expected a string",
            ),
            (r#"{"port": 70000}"#, "invalid value: integer, expected u16"),
            (
                r#"{"inner": "postgres://u:pw@h/db, expected x"}"#,
                "invalid type: string, expected struct Inner",
            ),
            (
                r#"{"password": ["x"]}"#,
                "invalid type: sequence, expected a string",
            ),
        ] {
            match parse_json::<Conn>(body.as_bytes()) {
                Err(AppError::BadRequest { detail, errors }) => {
                    assert_eq!(errors[0].message, kept, "{body}");
                    for secret in ["987654321", "12.75", "true", "70000", "pw@h"] {
                        assert!(!detail.contains(secret), "{detail}");
                    }
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn whole_numbers_are_integers_however_they_are_written() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Ids {
            id: i64,
            n: u16,
            ids: Vec<u64>,
        }
        let ids: Ids = parse_json(br#"{"id": -3.0, "n": 1e3, "ids": [2.0, 7, 0.0]}"#).unwrap();
        assert_eq!(
            ids,
            Ids {
                id: -3,
                n: 1000,
                ids: vec![2, 7, 0]
            }
        );
        for body in [
            r#"{"id": 1.5, "n": 1, "ids": []}"#,
            r#"{"id": 1e300, "n": 1, "ids": []}"#,
        ] {
            match parse_json::<Ids>(body.as_bytes()) {
                Err(AppError::BadRequest { errors, .. }) => assert_eq!(errors[0].path, "id", "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn keys_named_twice_are_refused_with_their_path() {
        match parse_json::<T>(br#"{"a": 1, "b": [{"c": "x", "c": "y"}]}"#) {
            Err(AppError::BadRequest { detail, errors }) => {
                assert_eq!(errors[0].path, "b[0]", "{detail}");
                assert!(detail.contains("duplicate field `c`"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        match parse_json::<T>(br#"{"a": 1, "a": 2, "b": []}"#) {
            Err(AppError::BadRequest { detail, .. }) => {
                assert!(detail.contains("duplicate field `a`"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn trailing_text_is_malformed() {
        match parse_json::<T>(br#"{"a": 1, "b": []} x"#) {
            Err(AppError::BadRequest { detail, errors }) => {
                assert!(detail.starts_with("malformed JSON at line 1"), "{detail}");
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

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Q {
        limit: Option<u64>,
        before_id: Option<i64>,
    }

    #[test]
    fn query_errors_name_the_parameter() {
        match parse_query::<Q>("limit=abc") {
            Err(AppError::BadRequest { detail, errors }) => {
                assert_eq!(errors[0].path, "limit");
                assert!(detail.starts_with("invalid query parameter limit"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_query::<Q>("limit=5&before_id=3").is_ok());
        assert!(matches!(
            parse_query::<Q>("limitt=5"),
            Err(AppError::BadRequest { .. })
        ));
    }
}
