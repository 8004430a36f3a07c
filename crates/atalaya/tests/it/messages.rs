//! The Anthropic-compatible endpoint, `POST /v1/messages`: served by the simulator, passed
//! through to an Anthropic upstream, translated to an OpenAI one; errors in Anthropic's shape.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

const UPSTREAM_KEY: &str = "sk-upstream-secret";

async fn messages(
    server: &Server,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client()
        .post(format!("{}/v1/messages", server.url()))
        .header("x-api-key", ADMIN_KEY)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// (event name, data) of each SSE event.
fn named_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|event| {
            let name = event
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_default()
                .to_owned();
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("null");
            (name, serde_json::from_str(data).unwrap())
        })
        .collect()
}

fn ask(model: &str) -> Value {
    json!({"model": model, "max_tokens": 300, "system": "Be brief.", "messages": [{"role": "user", "content": "What is the weather in Lima?"}]})
}

fn weather_tool() -> Value {
    json!([{"name": "get_weather", "description": "Weather for a city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
}

fn both_upstreams(mock: &Process) -> Server {
    serve(ServeOptions {
        config: &format!(
            "[[providers]]\ntype = \"anthropic\"\nbase_url = \"{url}\"\napi_key = \"${{UPSTREAM_KEY}}\"\n\n[[providers]]\ntype = \"openai\"\nbase_url = \"{url}/v1\"\napi_key = \"${{UPSTREAM_KEY}}\"\n",
            url = mock.url()
        ),
        env: vec![("UPSTREAM_KEY", UPSTREAM_KEY.to_owned())],
        ..ServeOptions::default()
    })
}

async fn check_stream(server: &Server, model: &str) {
    let mut body = ask(model);
    body["stream"] = json!(true);
    let (status, headers, answer) = messages(server, &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = named_events(answer.as_str().unwrap());
    let names: Vec<&str> = events
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != "ping")
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names[1], "content_block_start");
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "event name and type agree");
    }
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert!(!text.is_empty());
    let delta = &events.iter().find(|(n, _)| n == "message_delta").unwrap().1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn the_simulator_answers_in_anthropics_format() {
    let server = serve(ServeOptions::default());
    let (status, _, answer) = messages(&server, &ask("sim-chat"), &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["role"], "assistant");
    assert!(answer["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(answer["content"][0]["type"], "text");
    assert_eq!(answer["stop_reason"], "end_turn");
    assert!(answer["usage"]["input_tokens"].as_u64().unwrap() > 0);
    check_stream(&server, "sim-chat").await;
}

#[tokio::test]
async fn an_anthropic_upstream_gets_the_body_as_sent() {
    let mock = mock(MockOptions::default());
    let server = serve(ServeOptions {
        config: &format!(
            "[[providers]]\ntype = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"${{UPSTREAM_KEY}}\"\n\n[[models]]\nname = \"claude\"\nprovider = \"anthropic\"\nmodel = \"claude-haiku-4-5-20251001\"\n",
            mock.url()
        ),
        env: vec![("UPSTREAM_KEY", UPSTREAM_KEY.to_owned())],
        ..ServeOptions::default()
    });
    let mut body = ask("claude");
    body["vendor_field"] = json!({"kept": true});
    let (status, _, answer) =
        messages(&server, &body, &[("anthropic-beta", "tools-2024-04-04")]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "claude-haiku-4-5-20251001");
    let (_, seen) = get(&format!("{}/_mock/requests", mock.url()), "").await;
    let last = seen.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["body"]["model"], "claude-haiku-4-5-20251001");
    assert_eq!(last["body"]["vendor_field"]["kept"], true);
    let header = |name: &str| {
        last["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].clone())
    };
    assert_eq!(header("x-api-key"), Some(json!(UPSTREAM_KEY)));
    assert_eq!(header("anthropic-beta"), Some(json!("tools-2024-04-04")));
    check_stream(&server, "claude").await;
    let rows = eventually(Duration::from_secs(5), || async {
        let rows = log_rows(&server).await;
        (rows.len() >= 2).then_some(rows)
    })
    .await;
    for row in &rows {
        assert_eq!(row["endpoint"], "messages");
        // A stream's input tokens come in `message_start`, its output in `message_delta`.
        assert!(row["prompt_tokens"].as_i64().unwrap() > 0, "{row}");
        assert!(row["completion_tokens"].as_i64().unwrap() > 0, "{row}");
        assert!(row["cost_usd"].as_f64().unwrap() > 0.0, "{row}");
    }
}

#[tokio::test]
async fn an_openai_upstream_serves_anthropic_clients_tools_included() {
    let mock = mock(MockOptions::default());
    let server = both_upstreams(&mock);
    check_stream(&server, "gpt-4o-mini").await;

    let mut body = ask("gpt-4o-mini");
    body["tools"] = weather_tool();
    let (status, _, answer) = messages(&server, &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["stop_reason"], "tool_use");
    let tool_use = answer["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap()
        .clone();
    assert_eq!(tool_use["name"], "get_weather");
    assert!(tool_use["input"]["city"].is_string());

    // The tool's result, Anthropic style, reaches the OpenAI upstream as a tool message.
    body["messages"] = json!([
        {"role": "user", "content": "What is the weather in Lima?"},
        {"role": "assistant", "content": [tool_use]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"], "content": "19C and sunny"}]},
    ]);
    let (status, _, answer) = messages(&server, &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["stop_reason"], "end_turn");
    let (_, seen) = get(&format!("{}/_mock/requests", mock.url()), "").await;
    let sent = &seen.as_array().unwrap().last().unwrap()["body"];
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(sent["messages"][3]["role"], "tool");
    assert_eq!(sent["messages"][3]["tool_call_id"], tool_use["id"]);
    assert_eq!(sent["messages"][3]["content"], "19C and sunny");
}

#[tokio::test]
async fn errors_come_in_anthropics_shape() {
    let mock = mock(MockOptions::default());
    let server = both_upstreams(&mock);
    let expect = |answer: &Value, kind: &str| {
        assert_eq!(answer["type"], "error", "{answer}");
        assert_eq!(answer["error"]["type"], kind, "{answer}");
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    };
    let (status, _, answer) = messages(
        &server,
        &json!({"model": "gpt-4o-mini", "messages": []}),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    expect(&answer, "invalid_request_error");
    assert_eq!(answer["error"]["message"], "max_tokens: Field required");

    let (status, _, answer) = messages(&server, &ask("no-such-model"), &[]).await;
    assert_eq!(status, 404);
    expect(&answer, "not_found_error");

    let response = client()
        .post(format!("{}/v1/messages", server.url()))
        .header("x-api-key", "sk-atl-wrong")
        .body(ask("gpt-4o-mini").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    expect(&response.json().await.unwrap(), "authentication_error");

    let (status, _, answer) = messages(&server, &json!("not an object"), &[]).await;
    assert_eq!(status, 400);
    expect(&answer, "invalid_request_error");

    // An upstream 529 is an overloaded error with its Retry-After.
    post(
        &format!("{}/_mock/faults", mock.url()),
        "",
        r#"{"status": 529, "retry_after": 3, "times": 1}"#,
    )
    .await;
    let (status, headers, answer) = messages(
        &server,
        &ask("claude-haiku-4-5-20251001"),
        &[("x-atalaya-max-attempts", "1")],
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    expect(&answer, "overloaded_error");
    assert_eq!(headers["retry-after"], "3");
}
