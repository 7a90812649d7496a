//! Bearer-token authentication for `/api/v1.0/*` when `auth.tokens` is set. Tokens are compared
//! in constant time; a failure is a 401 problem that never echoes what was sent.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error};
use subtle::ConstantTimeEq;

use crate::error::AppError;

/// The accepted tokens (empty: no authentication).
#[derive(Clone, Default)]
pub struct Tokens(pub Vec<String>);

impl Tokens {
    pub fn accepts(&self, presented: &str) -> bool {
        // Every configured token is compared, so the time taken does not say which matched.
        self.0.iter().fold(false, |ok, t| {
            ok | bool::from(t.as_bytes().ct_eq(presented.as_bytes()))
        })
    }
}

pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let tokens = req
        .app_data::<web::Data<Tokens>>()
        .map(|t| t.get_ref().clone())
        .unwrap_or_default();
    if !tokens.0.is_empty() {
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let presented = header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")));
        match presented {
            None => {
                return Err(AppError::Unauthorized(
                    "missing bearer token: send Authorization: Bearer <token>".into(),
                )
                .into())
            }
            Some(token) if !tokens.accepts(token.trim()) => {
                return Err(AppError::Unauthorized("invalid bearer token".into()).into());
            }
            Some(_) => {}
        }
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_tokens() {
        let t = Tokens(vec!["alpha".into(), "beta".into()]);
        assert!(t.accepts("beta"));
        assert!(!t.accepts("gamma"));
        assert!(!t.accepts(""));
        assert!(!t.accepts("alph"));
    }
}
