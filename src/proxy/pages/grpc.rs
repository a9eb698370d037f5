//! Answers for gRPC clients. They read neither the HTTP status nor a body: a refusal is a
//! "Trailers-Only" response (HTTP 200, `content-type: application/grpc`, and the gRPC status in
//! `grpc-status` and `grpc-message`), which every gRPC library turns into the status code its
//! caller sees. Codes follow gRPC's own HTTP-to-gRPC table, refined where the proxy knows more
//! (a rate limit is `RESOURCE_EXHAUSTED`, a refusal by policy `PERMISSION_DENIED`).

use http::header::HeaderValue;
use http::{Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::{Answer, generated};
use crate::proxy::ProxyBody;

/// gRPC status codes the proxy answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum GrpcStatus {
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// What `grpc-message` may carry as it is: printable ASCII except `%` (the spec's
/// percent-encoding).
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

pub fn status_of(answer: &Answer) -> GrpcStatus {
    match answer {
        Answer::Unauthenticated
        | Answer::InvalidToken
        | Answer::PreflightNeedsCredentials
        | Answer::SessionRefreshIncomplete => GrpcStatus::Unauthenticated,
        Answer::SignInFailed(_) => GrpcStatus::Unauthenticated,
        Answer::Forbidden { .. } | Answer::Unprotected => GrpcStatus::PermissionDenied,
        Answer::NoRoute | Answer::UnknownReservedPath => GrpcStatus::Unimplemented,
        Answer::RateLimited { .. } => GrpcStatus::ResourceExhausted,
        Answer::MissingHost | Answer::BadPath(_) | Answer::Misconfigured(_) => GrpcStatus::Internal,
        Answer::NoHealthyUpstream | Answer::UpstreamUnavailable => GrpcStatus::Unavailable,
        Answer::UpstreamTimeout => GrpcStatus::DeadlineExceeded,
    }
}

/// The answer as a gRPC status; the message is the same text the page and JSON carry, with
/// the error code in front when there is one.
pub fn status_response(answer: &Answer, request_id: &HeaderValue) -> Response<ProxyBody> {
    let mut response = generated(
        StatusCode::OK,
        "application/grpc",
        String::new(),
        request_id,
    );
    let message = match answer.code() {
        Some(code) => format!("Error code {}: {}", code.number(), answer.detail()),
        None => answer.detail(),
    };
    let message = utf8_percent_encode(&message, MESSAGE_ESCAPES).to_string();
    let headers = response.headers_mut();
    headers.insert("grpc-status", HeaderValue::from(status_of(answer) as u16));
    if let Ok(message) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", message);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_the_grpc_status_a_client_acts_on() {
        let id = HeaderValue::from_static("req-1");
        let cases = [
            (Answer::Unauthenticated, "16"),
            (Answer::InvalidToken, "16"),
            (Answer::Unprotected, "7"),
            (Answer::NoRoute, "12"),
            (
                Answer::RateLimited {
                    retry_after_secs: 3,
                },
                "8",
            ),
            (Answer::UpstreamUnavailable, "14"),
            (Answer::Misconfigured(None), "13"),
        ];
        for (answer, code) in cases {
            let response = status_response(&answer, &id);
            assert_eq!(response.status(), StatusCode::OK, "{answer:?}");
            assert_eq!(response.headers()["content-type"], "application/grpc");
            assert_eq!(response.headers()["grpc-status"], code, "{answer:?}");
        }
    }

    #[test]
    fn the_message_is_percent_encoded_and_names_the_error_code() {
        let id = HeaderValue::from_static("req-1");
        let answer = Answer::Forbidden {
            identity: "ünïcode@example.com".into(),
            policy: "apps/echo".into(),
            reason: "100% denied.".into(),
        };
        let response = status_response(&answer, &id);
        let message = response.headers()["grpc-message"].to_str().unwrap();
        assert!(
            message.contains("%C3%BCn%C3%AFcode@example.com"),
            "{message}"
        );
        assert!(message.contains("100%25 denied."), "{message}");
        let coded = status_response(&Answer::InvalidToken, &id);
        let message = coded.headers()["grpc-message"].to_str().unwrap();
        assert!(message.starts_with("Error code 13:"), "{message}");
    }

    #[test]
    fn the_message_never_breaks_the_header() {
        let id = HeaderValue::from_static("req-1");
        let answer = Answer::BadPath("line\r\nx-injected: yes".into());
        let response = status_response(&answer, &id);
        assert!(response.headers().get("x-injected").is_none());
        let message = response.headers()["grpc-message"].to_str().unwrap();
        assert!(message.contains("line%0D%0Ax-injected"), "{message}");
    }
}
