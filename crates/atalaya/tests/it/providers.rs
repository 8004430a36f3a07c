//! Every native adapter end to end: an OpenAI client through the gateway to `mock-provider`
//! speaking the provider's own wire format — plain and streamed answers, tool calls, error
//! mapping, usage and cost in the request log.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

const UPSTREAM_KEY: &str = "sk-upstream-secret";

struct Adapter {
    /// The config entry pointing the provider at the simulator (`{url}` replaced).
    config: &'static str,
    model: &'static str,
    /// A piece of the path the simulator must have been called on.
    path: &'static str,
    /// The gateway asks for no streamed usage (the provider sends it unasked, the simulator
    /// does not), so streamed counts are the gateway's own estimate.
    estimates_streams: bool,
}

const OPENAI: Adapter = Adapter {
    config: "type = \"openai\"\nbase_url = \"{url}/v1\"\napi_key = \"${UPSTREAM_KEY}\"",
    model: "gpt-4o-mini",
    path: "/v1/chat/completions",
    estimates_streams: false,
};
const AZURE: Adapter = Adapter {
    config: "type = \"azure\"\nbase_url = \"{url}\"\napi_key = \"${UPSTREAM_KEY}\"\nmodels = [\"gpt-4o-mini\"]",
    model: "gpt-4o-mini",
    path: "/openai/deployments/gpt-4o-mini/chat/completions?api-version=",
    estimates_streams: false,
};
const ANTHROPIC: Adapter = Adapter {
    config: "type = \"anthropic\"\nbase_url = \"{url}\"\napi_key = \"${UPSTREAM_KEY}\"",
    model: "claude-haiku-4-5-20251001",
    path: "/v1/messages",
    estimates_streams: false,
};
const GEMINI: Adapter = Adapter {
    config: "type = \"gemini\"\nbase_url = \"{url}\"\napi_key = \"${UPSTREAM_KEY}\"",
    model: "gemini-2.0-flash",
    path: "/v1beta/models/gemini-2.0-flash:",
    estimates_streams: false,
};
const COHERE: Adapter = Adapter {
    config: "type = \"cohere\"\nbase_url = \"{url}\"\napi_key = \"${UPSTREAM_KEY}\"",
    model: "command-r-08-2024",
    path: "/v2/chat",
    estimates_streams: false,
};
const BEDROCK: Adapter = Adapter {
    config: "type = \"bedrock\"\nbase_url = \"{url}\"\nregion = \"us-east-1\"\naws_access_key_id = \"AKIDMOCKPROVIDER\"\naws_secret_access_key = \"mock-provider-secret\"",
    model: "anthropic.claude-3-haiku-20240307-v1:0",
    path: "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
    estimates_streams: false,
};
const MISTRAL: Adapter = Adapter {
    config: "type = \"mistral\"\nbase_url = \"{url}/v1\"\napi_key = \"${UPSTREAM_KEY}\"",
    model: "mistral-small-latest",
    path: "/v1/chat/completions",
    estimates_streams: true,
};

fn start(adapter: &Adapter) -> (Process, Server) {
    let mock = mock(MockOptions::default());
    let entry = adapter.config.replace("{url}", &mock.url());
    let server = serve(ServeOptions {
        config: &format!("[[providers]]\n{entry}\n"),
        env: vec![("UPSTREAM_KEY", UPSTREAM_KEY.to_owned())],
        ..ServeOptions::default()
    });
    (mock, server)
}

/// The JSON of every `data:` event of a stream, `[DONE]` left out.
pub fn events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}")))
        .collect()
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]},
    }}])
}

fn question() -> Value {
    json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the weather in Lima?"}])
}

async fn round_trip(adapter: &Adapter) {
    let (mock, server) = start(adapter);
    let url = format!("{}/v1/chat/completions", server.url());

    // A plain answer, with usage.
    let (status, _, body) = post(
        &url,
        ADMIN_KEY,
        &json!({"model": adapter.model, "messages": question(), "max_tokens": 200}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.is_empty());
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let prompt_tokens = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        prompt_tokens > 0 && body["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{body}"
    );

    // The same answer streamed, usage last, then [DONE].
    let (status, headers, body) = post(
        &url,
        ADMIN_KEY,
        &json!({"model": adapter.model, "messages": question(), "max_tokens": 200, "stream": true, "stream_options": {"include_usage": true}}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let raw = body.as_str().unwrap();
    assert!(raw.ends_with("data: [DONE]\n\n"), "{raw}");
    let chunks = events(raw);
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, text, "the stream says what the plain answer said");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        usage["prompt_tokens"].as_u64(),
        Some(prompt_tokens),
        "{raw}"
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop")
    );

    // A tool call, plain and streamed.
    let ask = json!({"model": adapter.model, "messages": question(), "tools": weather_tools(), "max_tokens": 200});
    let (status, _, body) = post(&url, ADMIN_KEY, &ask.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments["unit"], "celsius");
    assert!(arguments["city"].is_string());
    let call_id = call["id"].as_str().unwrap().to_owned();

    let mut streamed_ask = ask.clone();
    streamed_ask["stream"] = json!(true);
    let (status, _, body) = post(&url, ADMIN_KEY, &streamed_ask.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let chunks = events(body.as_str().unwrap());
    let name: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["name"].as_str())
        .collect();
    let streamed_arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&streamed_arguments).unwrap(),
        arguments
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );

    // The tool's result goes back; the model answers in text.
    let mut messages = question().as_array().unwrap().clone();
    messages.push(choice["message"].clone());
    messages
        .push(json!({"role": "tool", "tool_call_id": call_id, "content": "{\"temperature\": 19}"}));
    let (status, _, body) = post(&url, ADMIN_KEY, &json!({"model": adapter.model, "messages": messages, "tools": weather_tools(), "max_tokens": 200}).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");

    // The provider's 429 reaches the client as OpenAI's 429, Retry-After kept, when the
    // client asks the gateway not to retry.
    let (status, _, _) = post(
        &format!("{}/_mock/faults", mock.url()),
        "",
        r#"{"status": 429, "retry_after": 2, "times": 1}"#,
    )
    .await;
    assert_eq!(status, 201);
    let (status, headers, body) = post_with(
        &url,
        ADMIN_KEY,
        &json!({"model": adapter.model, "messages": question()}).to_string(),
        &[("x-atalaya-max-attempts", "1")],
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "upstream_rate_limited");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(headers["retry-after"], "2");

    // The simulator saw the provider's own paths.
    let (_, seen) = get(&format!("{}/_mock/requests", mock.url()), "").await;
    assert!(
        seen.as_array()
            .unwrap()
            .iter()
            .all(|r| r["path"].as_str().unwrap().contains(adapter.path)),
        "{seen}"
    );

    // Usage and cost reach the request log.
    let rows = eventually(Duration::from_secs(5), || async {
        let rows = log_rows(&server).await;
        (rows.len() >= 6).then_some(rows)
    })
    .await;
    for row in rows.iter().filter(|r| r["status"] == 200) {
        assert_eq!(row["upstream_model"], adapter.model);
        assert!(row["prompt_tokens"].as_i64().unwrap() > 0, "{row}");
        assert!(row["cost_usd"].as_f64().unwrap() > 0.0, "{row}");
        let estimated = adapter.estimates_streams && row["stream"] == true;
        assert_eq!(row["usage_estimated"], estimated, "{row}");
    }
    let failed = rows.iter().find(|r| r["status"] == 429).unwrap();
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("upstream_rate_limited")
    );
    assert!(
        !server.process.output().contains(UPSTREAM_KEY),
        "the upstream key leaked into logs"
    );
    let metrics = metrics_text(&server).await;
    assert!(metrics.contains("atalaya_cost_usd{"), "{metrics}");
}

#[tokio::test]
async fn openai_round_trip() {
    round_trip(&OPENAI).await;
}

#[tokio::test]
async fn azure_round_trip() {
    round_trip(&AZURE).await;
}

#[tokio::test]
async fn anthropic_round_trip() {
    round_trip(&ANTHROPIC).await;
}

#[tokio::test]
async fn gemini_round_trip() {
    round_trip(&GEMINI).await;
}

#[tokio::test]
async fn cohere_round_trip() {
    round_trip(&COHERE).await;
}

#[tokio::test]
async fn bedrock_round_trip() {
    round_trip(&BEDROCK).await;
}

#[tokio::test]
async fn mistral_round_trip() {
    round_trip(&MISTRAL).await;
}

#[tokio::test]
async fn what_a_provider_cannot_take_is_refused_or_dropped_on_request() {
    let (_mock, server) = start(&ANTHROPIC);
    let url = format!("{}/v1/chat/completions", server.url());
    let body = json!({"model": ANTHROPIC.model, "messages": question(), "n": 2}).to_string();
    let (status, _, answer) = post(&url, ADMIN_KEY, &body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "unsupported_parameter");
    assert_eq!(answer["error"]["param"], "n");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("provider `anthropic`") && message.contains("x-atalaya-drop-params"),
        "{message}"
    );

    let response = client()
        .post(&url)
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .header("x-atalaya-drop-params", "true")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn bedrock_credentials_are_checked_by_signature() {
    let mock = mock(MockOptions::default());
    let entry = BEDROCK
        .config
        .replace("{url}", &mock.url())
        .replace("mock-provider-secret", "wrong-secret");
    let server = serve(ServeOptions {
        config: &format!("[[providers]]\n{entry}\n"),
        ..ServeOptions::default()
    });
    let (status, _, body) = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &json!({"model": BEDROCK.model, "messages": question()}).to_string(),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_auth_failed");
    assert!(!server.process.output().contains("wrong-secret"));
}

#[tokio::test]
async fn gemini_and_cohere_embed_through_the_openai_endpoint() {
    for (adapter, model) in [
        (&GEMINI, "text-embedding-004"),
        (&COHERE, "embed-english-v3.0"),
    ] {
        let (_mock, server) = start(adapter);
        let url = format!("{}/v1/embeddings", server.url());
        let (status, _, body) = post(
            &url,
            ADMIN_KEY,
            &json!({"model": model, "input": ["a watchtower", "a harbor"]}).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"].as_array().unwrap().len(), 2);
        assert!(body["data"][0]["embedding"].as_array().unwrap().len() >= 256);
        assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
        let (status, _, body) = post(
            &url,
            ADMIN_KEY,
            &json!({"model": model, "input": [1, 2, 3]}).to_string(),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["param"], "input");
    }
}

#[tokio::test]
async fn mistral_gets_its_own_dialect() {
    let (mock, server) = start(&MISTRAL);
    let messages = json!([
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_01AbCdEfGhIjKlMn", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Lima\",\"unit\":\"celsius\"}"}}]},
        {"role": "tool", "tool_call_id": "toolu_01AbCdEfGhIjKlMn", "content": "19C"},
    ]);
    let body = json!({"model": MISTRAL.model, "messages": messages, "tools": weather_tools(), "tool_choice": "required", "seed": 7, "max_completion_tokens": 50});
    let (status, _, answer) = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (_, seen) = get(&format!("{}/_mock/requests", mock.url()), "").await;
    let sent = &seen.as_array().unwrap().last().unwrap()["body"];
    assert_eq!(sent["random_seed"], 7);
    assert!(sent.get("seed").is_none());
    assert_eq!(sent["tool_choice"], "any");
    assert_eq!(sent["max_tokens"], 50);
    let id = sent["messages"][1]["tool_calls"][0]["id"].as_str().unwrap();
    assert!(
        id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{id}"
    );
    assert_eq!(sent["messages"][2]["tool_call_id"], id);
}

#[tokio::test]
async fn images_and_json_schema_output_cross_formats() {
    let (mock, server) = start(&ANTHROPIC);
    let url = format!("{}/v1/chat/completions", server.url());
    let image = json!({"model": ANTHROPIC.model, "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/tower.jpg"}},
    ]}]});
    let (status, _, body) = post(&url, ADMIN_KEY, &image.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let (_, seen) = get(&format!("{}/_mock/requests", mock.url()), "").await;
    let content = &seen.as_array().unwrap().last().unwrap()["body"]["messages"][0]["content"];
    assert_eq!(
        content[1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
    );
    assert_eq!(
        content[2],
        json!({"type": "image", "source": {"type": "url", "url": "https://example.com/tower.jpg"}})
    );

    // Anthropic has no JSON mode: a forced tool call carries the schema, its input is the answer.
    let schema = json!({"type": "object", "properties": {"height_m": {"type": "integer"}, "name": {"type": "string"}}, "required": ["height_m", "name"]});
    for stream in [false, true] {
        let ask = json!({"model": ANTHROPIC.model, "max_tokens": 100, "stream": stream, "messages": question(),
            "response_format": {"type": "json_schema", "json_schema": {"name": "tower", "schema": schema}}});
        let (status, _, body) = post(&url, ADMIN_KEY, &ask.to_string()).await;
        assert_eq!(status, 200, "{body}");
        let text: String = if stream {
            events(body.as_str().unwrap())
                .iter()
                .filter_map(|c| {
                    c["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect()
        } else {
            assert_eq!(body["choices"][0]["finish_reason"], "stop");
            assert!(
                body["choices"][0]["message"]["tool_calls"].is_null(),
                "{body}"
            );
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let answer: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(
            answer["height_m"].is_u64() && answer["name"].is_string(),
            "{answer}"
        );
    }

    // Gemini takes the schema natively.
    let (mock, server) = start(&GEMINI);
    let ask = json!({"model": GEMINI.model, "messages": question(), "response_format": {"type": "json_schema", "json_schema": {"name": "tower", "schema": schema}}});
    let (status, _, body) = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &ask.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(answer["height_m"].is_u64(), "{answer}");
    let (_, seen) = get(&format!("{}/_mock/requests", mock.url()), "").await;
    let config = &seen.as_array().unwrap().last().unwrap()["body"]["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    // And refuses image URLs it cannot fetch, saying what to send instead.
    let (status, _, body) = post(&format!("{}/v1/chat/completions", server.url()), ADMIN_KEY, &json!({"model": GEMINI.model, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}).to_string()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("data: URL"),
        "{body}"
    );
}
