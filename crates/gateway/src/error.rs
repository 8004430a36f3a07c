//! The one API error type: a stable snake_case code, a status and a message, rendered as
//! OpenAI's error JSON, or Anthropic's on the Anthropic-compatible endpoint.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable and public: add codes, never rename them.
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    /// Passed on as the `Retry-After` header (429 and 503).
    pub retry_after: Option<HeaderValue>,
    /// Where the error was made, for error tracking.
    pub location: &'static std::panic::Location<'static>,
}

/// Attached to every error response so the request log and error tracking can record why
/// it failed.
#[derive(Debug, Clone)]
pub(crate) struct ErrorNote {
    pub text: String,
    pub code: &'static str,
    pub location: &'static std::panic::Location<'static>,
}

impl ApiError {
    /// The message is masked: upstream error texts, echoed request fields and the like may
    /// carry a secret, and it reaches the client, the request log and the logs.
    #[track_caller]
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = match atalaya_security::mask::mask(&message) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(masked) => masked,
        };
        ApiError {
            status,
            code,
            message,
            param: None,
            retry_after: None,
            location: std::panic::Location::caller(),
        }
    }

    /// Tells the client when to try again.
    pub fn retry_after_secs(mut self, seconds: u64) -> Self {
        self.retry_after = Some(HeaderValue::from(seconds));
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    #[track_caller]
    pub fn invalid_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    #[track_caller]
    pub fn model_not_found(model: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("The model `{model}` does not exist. `GET /v1/models` lists the models this gateway serves."),
        )
        .with_param("model")
    }

    /// OpenAI's `type` for this status, which SDKs surface beside the status.
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        }
    }

    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: &'a str,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        let outer = Outer {
            error: Inner {
                message: &self.message,
                kind: self.kind(),
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        serde_json::to_vec(&outer).unwrap_or_default()
    }
}

impl ApiError {
    /// The error in the caller's format.
    pub(crate) fn into_response_for(self, format: crate::ClientFormat) -> Response {
        match format {
            crate::ClientFormat::OpenAi => self.into_response(),
            crate::ClientFormat::Anthropic => {
                let body =
                    atalaya_translate::anthropic::error_body(self.status.as_u16(), &self.message);
                self.render(body)
            }
        }
    }

    pub(crate) fn render(self, body: Vec<u8>) -> Response {
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if let Some(retry_after) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
        }
        response.extensions_mut().insert(ErrorNote {
            text: format!("{}: {}", self.code, self.message),
            code: self.code,
            location: self.location,
        });
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        self.render(body)
    }
}

impl From<atalaya_translate::TranslateError> for ApiError {
    fn from(error: atalaya_translate::TranslateError) -> Self {
        use atalaya_translate::TranslateError;
        let param = error.param().map(str::to_owned);
        let mut api = match &error {
            TranslateError::Invalid { code, .. } => {
                ApiError::invalid_request(code, error.to_string())
            }
            TranslateError::Unsupported { .. } => {
                ApiError::invalid_request("unsupported_parameter", error.to_string())
            }
            TranslateError::Upstream(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_bad_response",
                format!("The provider's answer could not be read ({error})."),
            ),
        };
        api.param = param;
        api
    }
}
