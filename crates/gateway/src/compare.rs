//! `POST /api/v1/compare`: one prompt on several models at once, side by side, optionally
//! scored by a judge model.
//!
//! Each model's leg is an ordinary streamed chat request through routing (failover, breakers,
//! retries, limits, request log, cost) so a comparison shows what a client would really get.
//! One model failing fills its own `error` and leaves the others alone.

use std::sync::Arc;
use std::time::Duration;

use atalaya_translate::sse;
use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::inbound::Owned;
use crate::{ClientFormat, Deferred, Exchange, Gateway, Principal, RequestContext, Usage, v1};

/// Most models one comparison may run.
pub const MAX_MODELS: usize = 10;
/// Each leg's total time unless the request sets `timeout_ms`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Fields of a compare request that are not passed on to the models.
const OWN_FIELDS: [&str; 7] = [
    "models",
    "prompt",
    "system",
    "judge",
    "criteria",
    "timeout_ms",
    "stream",
];

/// One model's answer, or why there is none.
#[derive(Debug, Serialize, Default)]
pub(crate) struct Outcome {
    model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment: Option<String>,
    /// HTTP status the model's leg ended with (200, or the error's).
    status: u16,
    content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<String>,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttft_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorOut>,
    /// The judge's score (1–10) and reason, when a judge was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The request id of this leg's row in the request log.
    request_id: String,
}

#[derive(Debug, Serialize, Clone, Copy)]
struct UsageOut {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    estimated: bool,
}

#[derive(Debug, Serialize, Clone)]
struct ErrorOut {
    code: String,
    message: String,
}

#[derive(Debug, Serialize)]
struct JudgeOut {
    model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_usd: Option<f64>,
}

/// A validated compare request.
struct Asked {
    models: Vec<String>,
    messages: Value,
    /// OpenAI chat fields passed to every model (temperature, max_tokens, ...).
    extra: Map<String, Value>,
    judge: Option<String>,
    criteria: Option<String>,
    timeout: Duration,
}

pub(crate) async fn compare(
    State(gateway): State<Arc<Gateway>>,
    Extension(context): Extension<RequestContext>,
    Extension(principal): Extension<Principal>,
    Owned { headers, body }: Owned,
) -> Response {
    let asked = match body
        .map_err(|rejection| v1::body_error(rejection, gateway.max_body_bytes))
        .and_then(|body| parse(&body))
    {
        Ok(asked) => asked,
        Err(error) => return error.into_response(),
    };
    let headers = leg_headers(&headers, asked.timeout);
    let legs = asked.models.iter().enumerate().map(|(index, model)| {
        let mut body = asked.extra.clone();
        body.insert("messages".into(), asked.messages.clone());
        run_leg(
            &gateway,
            &headers,
            &principal,
            format!("{}-{index}", context.id),
            model.clone(),
            body,
        )
    });
    let mut results = futures_util::future::join_all(legs).await;
    let judge = match &asked.judge {
        Some(judge) => Some(
            judge_answers(
                &gateway,
                &context,
                &headers,
                &principal,
                judge,
                &asked,
                &mut results,
            )
            .await,
        ),
        None => None,
    };
    let mut answer = json!({
        "object": "compare",
        "id": context.id.to_string(),
        "results": results,
    });
    if let Some(judge) = judge {
        answer["judge"] = serde_json::to_value(judge).unwrap_or(Value::Null);
    }
    axum::Json(answer).into_response()
}

fn invalid(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::invalid_request("invalid_compare_request", message).with_param(param)
}

fn parse(body: &Bytes) -> Result<Asked, ApiError> {
    let mut fields: Map<String, Value> = serde_json::from_slice(body).map_err(|error| {
        ApiError::invalid_request(
            "invalid_json",
            format!("The body must be a JSON object: {error}."),
        )
    })?;
    let models: Vec<String> = match fields.get("models") {
        Some(Value::Array(models)) => models
            .iter()
            .map(|m| m.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid("'models' must be a list of model names.", "models"))?,
        _ => {
            return Err(invalid(
                "'models' is required: a list of model names to compare.",
                "models",
            ));
        }
    };
    if models.is_empty() || models.len() > MAX_MODELS {
        return Err(invalid(
            format!("'models' must name 1 to {MAX_MODELS} models."),
            "models",
        ));
    }
    if models.iter().any(|m| m.trim().is_empty()) {
        return Err(invalid("A model name in 'models' is empty.", "models"));
    }
    let text = |name: &'static str| -> Result<Option<String>, ApiError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(invalid(format!("'{name}' must be a string."), name)),
        }
    };
    let prompt = text("prompt")?;
    let system = text("system")?;
    let judge = text("judge")?;
    let criteria = text("criteria")?;
    let mut messages = match (fields.get("messages"), prompt) {
        (Some(Value::Array(messages)), None) if !messages.is_empty() => messages.clone(),
        (None, Some(prompt)) if !prompt.trim().is_empty() => {
            vec![json!({"role": "user", "content": prompt})]
        }
        (Some(_), Some(_)) => {
            return Err(invalid(
                "Send either 'prompt' or 'messages', not both.",
                "messages",
            ));
        }
        _ => {
            return Err(invalid(
                "Send the question as 'prompt' (text) or 'messages' (a non-empty OpenAI messages list).",
                "prompt",
            ));
        }
    };
    if let Some(system) = system {
        messages.insert(0, json!({"role": "system", "content": system}));
    }
    let timeout = match fields.get("timeout_ms") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT,
        Some(value) => match value.as_u64() {
            Some(ms) if (1..=600_000).contains(&ms) => Duration::from_millis(ms),
            _ => {
                return Err(invalid(
                    "'timeout_ms' must be a whole number of milliseconds from 1 to 600000.",
                    "timeout_ms",
                ));
            }
        },
    };
    for field in OWN_FIELDS.iter().chain(&["messages", "model"]) {
        fields.remove(*field);
    }
    fields.insert("stream".into(), Value::Bool(true));
    fields.insert("stream_options".into(), json!({"include_usage": true}));
    Ok(Asked {
        models,
        messages: Value::Array(messages),
        extra: fields,
        judge,
        criteria,
        timeout,
    })
}

/// The client's headers (routing rules may read them), with each leg's total time set.
fn leg_headers(headers: &HeaderMap, timeout: Duration) -> HeaderMap {
    let mut headers = headers.clone();
    headers.remove(axum::http::header::CONTENT_LENGTH);
    if !headers.contains_key("x-atalaya-timeout-ms") {
        headers.insert(
            "x-atalaya-timeout-ms",
            HeaderValue::from(timeout.as_millis() as u64),
        );
    }
    headers
}

/// One model's request, as a streamed chat completion through routing.
async fn run_leg(
    gateway: &Arc<Gateway>,
    headers: &HeaderMap,
    caller: &Principal,
    request_id: String,
    model: String,
    mut body: Map<String, Value>,
) -> Outcome {
    body.insert("model".into(), Value::String(model.clone()));
    let context = RequestContext {
        id: Arc::from(request_id.as_str()),
        started: Instant::now(),
        started_at_ms: atalaya_store::now_ms(),
        endpoint: "compare",
        format: ClientFormat::OpenAi,
        trace: crate::trace::Trace::from_headers(headers),
    };
    let mut exchange = Exchange::for_caller(caller);
    let bytes = Bytes::from(Value::Object(body).to_string());
    let result = v1::chat(gateway, &context, &mut exchange, headers, bytes).await;
    let info = exchange.info.clone();
    let response = v1::finish(result, exchange, ClientFormat::OpenAi);
    if response.extensions().get::<Deferred>().is_none() {
        // Not a stream: nobody else records this leg.
        let exchange = response
            .extensions()
            .get::<Exchange>()
            .cloned()
            .unwrap_or_default();
        gateway.record(&context, response.status().as_u16(), exchange);
    }
    let mut outcome = Outcome {
        model,
        request_id,
        status: response.status().as_u16(),
        deployment: response
            .headers()
            .get("x-atalaya-deployment")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ..Outcome::default()
    };
    if response.status() == StatusCode::OK {
        read_stream(response.into_body(), &context, &mut outcome).await;
    } else {
        outcome.error = Some(error_of(response.into_body()).await);
    }
    outcome.latency_ms = millis(context.started.elapsed());
    if let (Some(info), Some(usage)) = (info, outcome.usage) {
        outcome.cost_usd = info.cost(&Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            ..Usage::default()
        });
    }
    outcome
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

async fn error_of(body: Body) -> ErrorOut {
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    ErrorOut {
        code: value["error"]["code"]
            .as_str()
            .unwrap_or("upstream_error")
            .to_owned(),
        message: value["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
    }
}

/// Reads an OpenAI chat stream: content, time to the first token, usage, and an error event
/// if the stream broke.
async fn read_stream(body: Body, context: &RequestContext, outcome: &mut Outcome) {
    let mut parser = sse::Parser::new();
    let mut events = Vec::new();
    let mut chunks = body.into_data_stream();
    let mut done = false;
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => {
                outcome.error = Some(ErrorOut {
                    code: "upstream_stream_error".into(),
                    message: format!("The stream broke: {error}."),
                });
                break;
            }
        };
        if parser.push(&chunk, &mut events).is_err() {
            outcome.error = Some(ErrorOut {
                code: "upstream_bad_response".into(),
                message: "An event of the stream was too large.".into(),
            });
            break;
        }
        for event in events.drain(..) {
            if event.data == b"[DONE]" {
                done = true;
                continue;
            }
            let Ok(value) = serde_json::from_slice::<Value>(&event.data) else {
                continue;
            };
            if let Some(error) = value.get("error") {
                outcome.status = StatusCode::BAD_GATEWAY.as_u16();
                outcome.error = Some(ErrorOut {
                    code: error["code"]
                        .as_str()
                        .unwrap_or("upstream_stream_error")
                        .to_owned(),
                    message: error["message"].as_str().unwrap_or_default().to_owned(),
                });
                continue;
            }
            if let Some(choice) = value["choices"].get(0) {
                if let Some(text) = choice["delta"]["content"].as_str()
                    && !text.is_empty()
                {
                    outcome
                        .ttft_ms
                        .get_or_insert_with(|| millis(context.started.elapsed()));
                    outcome.content.push_str(text);
                }
                if let Some(calls) = choice["delta"]["tool_calls"].as_array()
                    && !calls.is_empty()
                {
                    outcome
                        .ttft_ms
                        .get_or_insert_with(|| millis(context.started.elapsed()));
                }
                if let Some(reason) = choice["finish_reason"].as_str() {
                    outcome.finish_reason = Some(reason.to_owned());
                }
            }
            if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
                let prompt = usage["prompt_tokens"].as_u64().unwrap_or(0);
                let completion = usage["completion_tokens"].as_u64().unwrap_or(0);
                outcome.usage = Some(UsageOut {
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    total_tokens: prompt + completion,
                    estimated: usage["estimated"].as_bool().unwrap_or(false),
                });
            }
        }
    }
    if !done && outcome.error.is_none() {
        outcome.status = StatusCode::BAD_GATEWAY.as_u16();
        outcome.error = Some(ErrorOut {
            code: "upstream_stream_error".into(),
            message: "The stream ended without its final event.".into(),
        });
    }
}

/// Labels the answers A, B, C... for the judge, so model names do not sway it.
fn label(index: usize) -> String {
    char::from(b'A' + index as u8).to_string()
}

/// Asks `judge` to score every successful answer 1–10; fills `score` and `reason`.
async fn judge_answers(
    gateway: &Arc<Gateway>,
    context: &RequestContext,
    headers: &HeaderMap,
    caller: &Principal,
    judge: &str,
    asked: &Asked,
    results: &mut [Outcome],
) -> JudgeOut {
    let answered: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.error.is_none())
        .map(|(i, _)| i)
        .collect();
    let mut out = JudgeOut {
        model: judge.to_owned(),
        error: None,
        cost_usd: None,
    };
    if answered.is_empty() {
        out.error = Some(ErrorOut {
            code: "nothing_to_judge".into(),
            message: "No model answered, so there is nothing to score.".into(),
        });
        return out;
    }
    let question = asked
        .messages
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let content = match &m["content"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            format!("{}: {content}", m["role"].as_str().unwrap_or("user"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut prompt = format!(
        "Score each answer to the conversation below from 1 (useless) to 10 (excellent){}.\n\n\
         Conversation:\n{question}\n",
        asked
            .criteria
            .as_deref()
            .map(|c| format!(" for: {c}"))
            .unwrap_or_default()
    );
    let mut properties = Map::new();
    for (position, index) in answered.iter().enumerate() {
        let name = label(position);
        prompt.push_str(&format!("\nAnswer {name}:\n{}\n", results[*index].content));
        properties.insert(
            name,
            json!({
                "type": "object",
                "properties": {
                    "score": {"type": "integer", "minimum": 1, "maximum": 10},
                    "reason": {"type": "string"}
                },
                "required": ["score", "reason"],
                "additionalProperties": false
            }),
        );
    }
    prompt.push_str(
        "\nReply with JSON only: for each answer letter, its score and a one-sentence reason.",
    );
    let required: Vec<Value> = properties.keys().cloned().map(Value::String).collect();
    let mut body = Map::new();
    body.insert(
        "messages".into(),
        json!([
            {"role": "system", "content": "You are a strict, fair judge of AI answers."},
            {"role": "user", "content": prompt}
        ]),
    );
    body.insert("temperature".into(), json!(0));
    body.insert(
        "response_format".into(),
        json!({"type": "json_schema", "json_schema": {"name": "scores", "strict": true, "schema": {
            "type": "object", "properties": properties, "required": required, "additionalProperties": false
        }}}),
    );
    body.insert("stream".into(), Value::Bool(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    let verdict = run_leg(
        gateway,
        headers,
        caller,
        format!("{}-judge", context.id),
        judge.to_owned(),
        body,
    )
    .await;
    out.cost_usd = verdict.cost_usd;
    if let Some(error) = verdict.error {
        out.error = Some(error);
        return out;
    }
    let parsed = json_in(&verdict.content);
    let Some(scores) = parsed.as_ref().and_then(Value::as_object) else {
        out.error = Some(ErrorOut {
            code: "judge_unreadable".into(),
            message: format!(
                "The judge did not answer with the JSON asked for: {}",
                verdict.content.chars().take(200).collect::<String>()
            ),
        });
        return out;
    };
    for (position, index) in answered.iter().enumerate() {
        let Some(entry) = scores.get(&label(position)) else {
            continue;
        };
        results[*index].score = entry["score"]
            .as_f64()
            .map(|s| s.round().clamp(1.0, 10.0) as u8);
        results[*index].reason = entry["reason"].as_str().map(str::to_owned);
    }
    out
}

/// The JSON object in a model's reply, tolerating a code fence or words around it.
fn json_in(text: &str) -> Option<Value> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    serde_json::from_str(text.get(start..=end)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prompt_becomes_messages_and_own_fields_stay_home() {
        let asked = parse(&Bytes::from_static(
            br#"{"models": ["a", "b"], "prompt": "hi", "system": "be brief", "temperature": 0.2, "judge": "j", "timeout_ms": 5000}"#,
        ))
        .unwrap();
        assert_eq!(asked.models, ["a", "b"]);
        assert_eq!(asked.messages[0]["role"], "system");
        assert_eq!(asked.messages[1]["content"], "hi");
        assert_eq!(asked.extra["temperature"], 0.2);
        assert_eq!(asked.extra["stream"], true);
        assert!(!asked.extra.contains_key("judge") && !asked.extra.contains_key("models"));
        assert_eq!(asked.timeout, Duration::from_millis(5000));
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (body, param) in [
            (r#"{"prompt": "hi"}"#, "models"),
            (r#"{"models": [], "prompt": "hi"}"#, "models"),
            (r#"{"models": ["a", 3], "prompt": "hi"}"#, "models"),
            (r#"{"models": ["a"]}"#, "prompt"),
            (
                r#"{"models": ["a"], "prompt": "x", "messages": []}"#,
                "messages",
            ),
            (
                r#"{"models": ["a"], "prompt": "x", "timeout_ms": -1}"#,
                "timeout_ms",
            ),
            (r#"{"models": ["a"], "prompt": 7}"#, "prompt"),
        ] {
            let error = parse(&Bytes::from(body)).err().unwrap();
            assert_eq!(error.param.as_deref(), Some(param), "{body}");
        }
        let many =
            serde_json::to_string(&json!({"models": vec!["m"; MAX_MODELS + 1], "prompt": "x"}))
                .unwrap();
        assert!(parse(&Bytes::from(many)).is_err());
    }

    #[test]
    fn the_judges_json_is_found_inside_words() {
        assert_eq!(
            json_in("Sure:\n```json\n{\"A\": {\"score\": 7}}\n```"),
            Some(json!({"A": {"score": 7}}))
        );
        assert_eq!(json_in("no json"), None);
    }
}
