use super::*;

fn chat(body: &str) -> Result<ChatParams, ApiError> {
    parse_chat(body.as_bytes())
}

#[test]
fn missing_messages_is_openais_error() {
    let error = chat(r#"{"model":"gpt-4o-mini"}"#).unwrap_err();
    assert_eq!(error.status, 400);
    assert_eq!(error.param.as_deref(), Some("messages"));
    assert_eq!(error.code, Some("missing_required_parameter"));
    let body: serde_json::Value = serde_json::from_slice(&error.body()).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[test]
fn stream_events_end_with_usage_then_done() {
    let params = chat(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    let answer = ChatAnswer::generate(&params);
    let events = answer.events();
    assert!(events.len() >= 5);
    assert_eq!(&events[events.len() - 1][..], b"data: [DONE]\n\n");
    let usage_frame = std::str::from_utf8(&events[events.len() - 2]).unwrap();
    let usage: serde_json::Value =
        serde_json::from_str(usage_frame.trim_start_matches("data: ").trim()).unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(
        usage["usage"]["completion_tokens"],
        answer.completion_tokens()
    );
    let first: serde_json::Value = serde_json::from_str(
        std::str::from_utf8(&events[0])
            .unwrap()
            .trim_start_matches("data: ")
            .trim(),
    )
    .unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert!(first["usage"].is_null() && first.as_object().unwrap().contains_key("usage"));
}

#[test]
fn without_include_usage_chunks_carry_no_usage_field() {
    let params =
        chat(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
    let events = ChatAnswer::generate(&params).events();
    for event in &events[..events.len() - 1] {
        let value: serde_json::Value = serde_json::from_str(
            std::str::from_utf8(event)
                .unwrap()
                .trim_start_matches("data: ")
                .trim(),
        )
        .unwrap();
        assert!(!value.as_object().unwrap().contains_key("usage"), "{value}");
    }
}

#[test]
fn content_parts_count_towards_the_prompt() {
    let plain =
        chat(r#"{"model":"m","messages":[{"role":"user","content":"hello there"}]}"#).unwrap();
    let parts = chat(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hello there"}]}]}"#).unwrap();
    assert_eq!(plain.prompt_tokens, parts.prompt_tokens);
    assert_eq!(plain.seed, parts.seed);
}

#[test]
fn embeddings_accept_every_input_shape_and_base64() {
    for input in [r#""a""#, r#"["a","b"]"#, "[1,2,3]", "[[1,2],[3]]"] {
        let params =
            parse_embeddings(format!(r#"{{"model":"e","input":{input}}}"#).as_bytes()).unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(&embeddings_json(&params, 8).unwrap()).unwrap();
        assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 8);
    }
    let params =
        parse_embeddings(br#"{"model":"e","input":"a","encoding_format":"base64","dimensions":4}"#)
            .unwrap();
    let body: serde_json::Value =
        serde_json::from_slice(&embeddings_json(&params, 8).unwrap()).unwrap();
    let encoded = body["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap()
            .len(),
        16
    );
    let too_big = parse_embeddings(br#"{"model":"e","input":"a","dimensions":9}"#).unwrap();
    assert_eq!(
        embeddings_json(&too_big, 8).unwrap_err().param.as_deref(),
        Some("dimensions")
    );
    assert!(parse_embeddings(br#"{"model":"e","input":""}"#).is_err());
}

#[test]
fn events_rendered_as_taken_match_the_whole_list() {
    for body in [
        r#"{"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Tell me about lighthouses."}]}"#,
        r#"{"model": "gpt-4o-mini", "stream": true, "n": 2, "messages": [{"role": "user", "content": "hi"}]}"#,
        r#"{"model": "gpt-4o-mini", "stream": true, "tool_choice": "required", "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}], "messages": [{"role": "user", "content": "Weather in Lisbon?"}]}"#,
    ] {
        let answer = ChatAnswer::generate(&chat(body).unwrap());
        let whole = answer.events();
        let lazy: Vec<Bytes> = answer.into_events().collect();
        assert_eq!(whole, lazy, "{body}");
        assert!(whole.iter().all(|event| event.starts_with(b"data: ")));
    }
}
