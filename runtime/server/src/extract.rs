//! Extractors whose rejections are the API's JSON errors.

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `Json<T>` answering malformed JSON with 400, a body over the limit with 413.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state).await.map(|axum::Json(v)| ApiJson(v)).map_err(ApiError::from)
    }
}

/// A text body (YAML definitions): over the limit is 413, not UTF-8 is 400, both JSON errors.
pub struct ApiText(pub String);

impl<S: Send + Sync> FromRequest<S> for ApiText {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        String::from_request(req, state).await.map(ApiText).map_err(|r| {
            let status = r.status();
            let code =
                if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "bad_request" };
            ApiError::new(status, code, r.body_text())
        })
    }
}

/// `Query<T>` answering a bad query string with 400.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state).await.map(|Query(v)| ApiQuery(v)).map_err(ApiError::from)
    }
}

/// A request type from a body already read as JSON: fields of the wrong shape are 422.
pub fn parse_body<T: DeserializeOwned>(body: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(body).map_err(|e| ApiError::invalid(format!("request body: {e}")))
}
