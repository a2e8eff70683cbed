//! Every error a read can meet, mapped to a gRPC status in one place.

use crate::auth::AuthError;
use crate::feed::Cursor;
use crate::kafka::KafkaError;
use crate::proto::MalformedScore;
use crate::store::StoreError;
use tonic::{Code, Status};

/// The metadata key of the cursor a lagging watch stream can resume from.
pub const RESUME_CURSOR: &str = "pcs-resume-cursor";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{field}: {message}")]
    InvalidArgument { field: &'static str, message: String },
    #[error("partner {0} has no score (no accepted event)")]
    NotFound(String),
    #[error("{0}")]
    TooMany(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Malformed(#[from] MalformedScore),
    #[error("score feed unavailable: {0}")]
    Feed(#[from] KafkaError),
    #[error("{field} {day} is before the retained history, which starts on {history_start}")]
    BeforeHistory { field: &'static str, day: String, history_start: String },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("watcher fell more than {buffer} changes behind; resume with the cursor in {RESUME_CURSOR}")]
    Lagged { buffer: usize, cursor: Cursor },
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = match &e {
            ApiError::InvalidArgument { .. } => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::TooMany(_) => Code::ResourceExhausted,
            ApiError::Store(StoreError::Unavailable(_)) | ApiError::Feed(_) => Code::Unavailable,
            ApiError::Store(_) | ApiError::Malformed(_) => Code::Internal,
            ApiError::BeforeHistory { .. } => Code::OutOfRange,
            ApiError::Lagged { .. } => Code::Aborted,
            ApiError::Auth(AuthError::MissingToken | AuthError::InvalidToken(_)) => Code::Unauthenticated,
            ApiError::Auth(AuthError::MissingScope(_) | AuthError::Forbidden(_)) => Code::PermissionDenied,
            ApiError::Auth(AuthError::Jwks { .. }) => Code::Internal,
        };
        let mut status = Status::new(code, e.to_string());
        if let ApiError::Lagged { cursor, .. } = &e
            && let Ok(value) = cursor.encode().parse()
        {
            status.metadata_mut().insert(RESUME_CURSOR, value);
        }
        status
    }
}
