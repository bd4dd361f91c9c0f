//! The one error type of the HTTP API; every error is a JSON body
//! `{"error": ..., "field": ..., "details": [...]}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sdp_spec::wire::ErrorBody;
use sdp_spec::{SpecError, SpecErrors};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        message: String,
        field: Option<String>,
    },
    #[error("{0}")]
    Spec(SpecErrors),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("shutting down")]
    ShuttingDown,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, field: Option<&str>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            field: field.map(String::from),
        }
    }
}

impl From<Vec<SpecError>> for ApiError {
    fn from(v: Vec<SpecError>) -> Self {
        ApiError::Spec(SpecErrors(v))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::BadRequest { message, field } => (
                StatusCode::BAD_REQUEST,
                ErrorBody {
                    error: message.clone(),
                    field: field.clone(),
                    details: vec![],
                },
            ),
            ApiError::Spec(errs) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorBody {
                    error: errs.to_string(),
                    field: errs.0.first().and_then(|e| e.field.clone()),
                    details: errs.0.clone(),
                },
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, plain(m)),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, plain(m)),
            ApiError::Store(e) => {
                tracing::error!(error = %e, "storage failure");
                (StatusCode::INTERNAL_SERVER_ERROR, plain(&self.to_string()))
            }
            ApiError::ShuttingDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                plain("controller is shutting down"),
            ),
        };
        (status, Json(body)).into_response()
    }
}

fn plain(m: &str) -> ErrorBody {
    ErrorBody {
        error: m.to_string(),
        field: None,
        details: vec![],
    }
}
