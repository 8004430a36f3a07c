use super::*;

fn target() -> Target {
    Target::new("test")
}

#[test]
fn a_request_with_tools_images_and_history_decodes() {
    let body = br#"{
        "model": "gpt-4o",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}},
        "max_completion_tokens": 100, "stop": "END", "stream": true, "stream_options": {"include_usage": true},
        "logit_bias": {"50256": -100}
    }"#;
    let request = decode_request(body, &target()).unwrap();
    assert_eq!(request.messages.len(), 4);
    assert_eq!(request.messages[0].role, Role::System);
    assert_eq!(
        request.messages[1].content[1],
        Part::Image(Image {
            source: ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgo=".into()
            },
            detail: Some("low".into()),
        })
    );
    assert_eq!(
        request.messages[2].tool_calls[0].arguments,
        "{\"q\":\"cat\"}"
    );
    assert_eq!(request.messages[3].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(request.tool_choice, Some(ToolChoice::Tool("lookup".into())));
    assert!(matches!(
        request.response_format,
        Some(ResponseFormat::JsonSchema {
            strict: Some(true),
            ..
        })
    ));
    assert_eq!(request.max_tokens, Some(100));
    assert_eq!(request.stop, vec!["END".to_owned()]);
    assert!(request.stream && request.stream_usage);
    assert_eq!(
        request.extra,
        vec![("logit_bias".to_owned(), r#"{"50256": -100}"#.to_owned())]
    );
}

#[test]
fn audio_parts_are_refused_unless_dropped() {
    let body = br#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}"#;
    let error = decode_request(body, &target()).unwrap_err();
    assert!(
        matches!(error, TranslateError::Unsupported { ref feature, .. } if feature == "messages[0].content[0]"),
        "{error}"
    );
    let dropping = Target {
        drop_unsupported: true,
        ..target()
    };
    assert!(
        decode_request(body, &dropping).unwrap().messages[0]
            .content
            .is_empty()
    );
}

#[test]
fn quirks_shape_the_encoded_request() {
    let mut request = ChatRequest {
        model: "mistral-large-latest".into(),
        messages: vec![Message::text(Role::User, "hi")],
        max_tokens: Some(10),
        seed: Some(7),
        tool_choice: Some(ToolChoice::Required),
        stream: true,
        ..ChatRequest::default()
    };
    request.tools.push(Tool {
        name: "f".into(),
        description: None,
        parameters: json!({"type": "object"}),
        strict: None,
    });
    let mut assistant = Message::new(Role::Assistant, Vec::new());
    assistant.tool_calls.push(ToolCall {
        id: "toolu_01ABC".into(),
        name: "f".into(),
        arguments: "{}".into(),
    });
    let mut result = Message::text(Role::Tool, "ok");
    result.tool_call_id = Some("toolu_01ABC".into());
    request.messages.push(assistant);
    request.messages.push(result);
    let quirks = Quirks {
        legacy_max_tokens: true,
        seed_field: "random_seed",
        stream_options: false,
        tool_choice_required: "any",
        nine_char_tool_ids: true,
        ..Quirks::default()
    };
    let body: Value =
        serde_json::from_slice(&encode_request(&request, &target(), &quirks).unwrap()).unwrap();
    assert_eq!(body["max_tokens"], 10);
    assert_eq!(body["random_seed"], 7);
    assert_eq!(body["tool_choice"], "any");
    assert!(body.get("stream_options").is_none());
    let call_id = body["messages"][1]["tool_calls"][0]["id"].as_str().unwrap();
    assert_eq!(call_id.len(), 9);
    assert!(call_id.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(body["messages"][2]["tool_call_id"], call_id);
    let openai: Value =
        serde_json::from_slice(&encode_request(&request, &target(), &Quirks::default()).unwrap())
            .unwrap();
    assert_eq!(openai["max_completion_tokens"], 10);
    assert_eq!(openai["stream_options"]["include_usage"], true);
    assert_eq!(openai["messages"][1]["tool_calls"][0]["id"], "toolu_01ABC");
}

#[test]
fn top_k_is_refused_where_the_server_lacks_it() {
    let request = ChatRequest {
        model: "m".into(),
        top_k: Some(5),
        ..ChatRequest::default()
    };
    let error = encode_request(&request, &target(), &Quirks::default()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("`top_k` cannot be sent to provider `test`"),
        "{error}"
    );
    let quirks = Quirks {
        top_k: true,
        ..Quirks::default()
    };
    let body: Value =
        serde_json::from_slice(&encode_request(&request, &target(), &quirks).unwrap()).unwrap();
    assert_eq!(body["top_k"], 5);
}

#[test]
fn a_streamed_tool_call_decodes_in_order() {
    let events = [
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"lookup","arguments":""}}]},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":"}}]},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"x\"}"}}]},"finish_reason":null}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13,"prompt_tokens_details":{"cached_tokens":2}}}"#,
        "[DONE]",
    ];
    let mut decoder = StreamDecoder::new();
    let deltas: Vec<Delta> = events
        .iter()
        .flat_map(|e| decoder.decode(e.as_bytes()).unwrap())
        .collect();
    assert!(decoder.complete());
    assert_eq!(
        deltas,
        vec![
            Delta::Start {
                id: Some("chatcmpl-1".into()),
                model: Some("gpt-4o".into())
            },
            Delta::ToolCallStart {
                choice: 0,
                index: 0,
                id: "call_a".into(),
                name: "lookup".into()
            },
            Delta::ToolCallArguments {
                choice: 0,
                index: 0,
                fragment: "{\"q\":".into()
            },
            Delta::ToolCallArguments {
                choice: 0,
                index: 0,
                fragment: "\"x\"}".into()
            },
            Delta::Finish {
                choice: 0,
                reason: FinishReason::ToolCalls,
                stop_sequence: None
            },
            Delta::Usage(Usage {
                prompt_tokens: 9,
                completion_tokens: 4,
                cached_tokens: 2,
                ..Usage::default()
            }),
        ]
    );
}

#[test]
fn an_error_event_inside_a_stream_is_a_provider_failure() {
    let mut decoder = StreamDecoder::new();
    let failure = decoder
        .decode(br#"{"error":{"message":"overloaded","type":"server_error"}}"#)
        .unwrap_err();
    assert_eq!(
        failure,
        StreamFailure::Provider(StreamError {
            kind: "server_error".into(),
            message: "overloaded".into()
        })
    );
}

#[test]
fn the_encoder_writes_usage_last_and_done() {
    let mut encoder = StreamEncoder::new("id".into(), "m".into(), true);
    let mut out = Vec::new();
    encoder.encode(
        Delta::Start {
            id: None,
            model: None,
        },
        &mut out,
    );
    encoder.encode(
        Delta::Text {
            choice: 0,
            text: "hi".into(),
        },
        &mut out,
    );
    encoder.encode(
        Delta::Usage(Usage {
            prompt_tokens: 3,
            completion_tokens: 1,
            ..Usage::default()
        }),
        &mut out,
    );
    encoder.encode(
        Delta::Finish {
            choice: 0,
            reason: FinishReason::Stop,
            stop_sequence: None,
        },
        &mut out,
    );
    encoder.finish(&mut out);
    let text = String::from_utf8(out).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 5, "{text}");
    assert!(
        events[0].contains(r#""delta":{"role":"assistant","content":""}"#),
        "{}",
        events[0]
    );
    assert!(events[2].contains(r#""finish_reason":"stop""#));
    assert!(events[3].contains(r#""choices":[]"#) && events[3].contains(r#""total_tokens":4"#));
    assert_eq!(events[4], "data: [DONE]");
}

#[test]
fn responses_round_trip() {
    let body = br#"{"id":"chatcmpl-9","object":"chat.completion","created":5,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
    let response = decode_response(body).unwrap();
    assert_eq!(response.choices[0].finish_reason, FinishReason::ToolCalls);
    let again = decode_response(&encode_response(&response)).unwrap();
    assert_eq!(again, response);
}

#[test]
fn usage_is_found_in_bodies_and_chunks() {
    let usage = usage_of(
        br#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
    )
    .unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 4));
    assert_eq!(usage_of(br#"{"id":"x"}"#), None);
    let (usage, usage_only) =
        chunk_usage(br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#)
            .unwrap();
    assert_eq!(usage.completion_tokens, 2);
    assert!(usage_only);
    assert!(chunk_usage(br#"{"choices":[{"delta":{}}],"usage":null}"#).is_none());
}

#[test]
fn embeddings_encode_as_floats_or_base64() {
    let usage = Usage {
        prompt_tokens: 2,
        ..Usage::default()
    };
    let floats: Value =
        serde_json::from_slice(&encode_embeddings(&[vec![0.5, -1.0]], "m", &usage, false)).unwrap();
    assert_eq!(floats["data"][0]["embedding"], json!([0.5, -1.0]));
    assert_eq!(floats["usage"]["total_tokens"], 2);
    let encoded: Value =
        serde_json::from_slice(&encode_embeddings(&[vec![0.5]], "m", &usage, true)).unwrap();
    assert_eq!(encoded["data"][0]["embedding"], "AAAAPw==");
}

/// Found by fuzzing: another format's unknown fields were written into OpenAI bodies as they
/// were, where they may mean something else (or have another type).
#[test]
fn another_formats_unknown_fields_are_refused_not_copied() {
    let anthropic_body = br#"{"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "presence_penalty": {"type": "x"}}"#;
    let request = crate::anthropic::decode_request(anthropic_body, &target()).unwrap();
    let error = encode_request(&request, &target(), &Quirks::default()).unwrap_err();
    assert!(
        matches!(error, TranslateError::Unsupported { ref feature, .. } if feature == "presence_penalty"),
        "{error}"
    );
    let dropping = Target {
        drop_unsupported: true,
        ..target()
    };
    let body = encode_request(&request, &dropping, &Quirks::default()).unwrap();
    assert!(
        !String::from_utf8(body)
            .unwrap()
            .contains("presence_penalty")
    );
    // OpenAI's own unknown fields still go back to OpenAI-style servers.
    let openai_body = br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "prediction": {"type": "content", "content": "x"}}"#;
    let request = decode_request(openai_body, &target()).unwrap();
    let body = encode_request(&request, &target(), &Quirks::default()).unwrap();
    assert!(String::from_utf8(body).unwrap().contains("\"prediction\""));
}

/// What serde alone makes of a `usage` value.
fn serde_usage(text: &str) -> Option<Usage> {
    let mut reader = serde_json::Deserializer::from_slice(text.as_bytes());
    Option::<WireUsage>::deserialize(&mut reader)
        .ok()
        .flatten()
        .map(WireUsage::canonical)
}

#[test]
fn usage_read_in_place_agrees_with_serde() {
    let read_in_place = [
        "null",
        "{}",
        r#"{"prompt_tokens":30,"completion_tokens":22,"total_tokens":52,"prompt_tokens_details":{"cached_tokens":7,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":3,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#,
        r#" { "prompt_tokens" : 1 ,
            "completion_tokens":2 } "#,
        r#"{"prompt_tokens":null,"completion_tokens":5,"prompt_tokens_details":null}"#,
        r#"{"completion_tokens":5,"prompt_tokens_details":{},"completion_tokens_details":{"reasoning_tokens":null}}"#,
        r#"{"x":{"prompt_tokens":99,"s":"}\"{"},"y":[1,[2,{"z":"]"}]],"prompt_tokens":4,"w":true,"v":-1.5e3}"#,
        r#"{"prompt_tokens":18446744073709551615,"completion_tokens":0}"#,
    ];
    for text in read_in_place {
        let quick = quick_usage(text.as_bytes()).unwrap_or_else(|| panic!("not read: {text}"));
        assert_eq!(quick.map(WireUsage::canonical), serde_usage(text), "{text}");
        assert_eq!(
            usage_of(format!(r#"{{"id":"x","usage":{text}}}"#).as_bytes()),
            serde_usage(text),
            "{text}"
        );
    }
    // Left to serde, which reads some and refuses others; usage_of says what serde says.
    let left_to_serde = [
        r#"{"prompt_tokens":1.0}"#,
        r#"{"prompt_tokens":-1}"#,
        r#"{"prompt_tokens":01}"#,
        r#"{"prompt_tokens":1e2}"#,
        r#"{"prompt_tokens":"1"}"#,
        r#"{"prompt_tokens":1,"prompt_tokens":2}"#,
        r#"{"prompt_tok\u0065ns":9}"#,
        r#"{"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":2}}"#,
        r#"{"prompt_tokens_details":[1]}"#,
        r#"{"prompt_tokens":18446744073709551616}"#,
        r#"{"prompt_tokens":1"#,
        r#"{"prompt_tokens" 1}"#,
        "[]",
        "7",
        "",
    ];
    for text in left_to_serde {
        assert!(quick_usage(text.as_bytes()).is_none(), "read: {text}");
        // In a body, the value runs to the body's end (its closing brace included).
        let body = format!(r#"{{"usage":{text}}}"#);
        assert_eq!(
            usage_of(body.as_bytes()),
            serde_usage(&body[r#"{"usage":"#.len()..]),
            "{text}"
        );
    }
    assert_eq!(
        usage_of(br#"{"usage":{"prompt_tok\u0065ns":9}}"#).map(|u| u.prompt_tokens),
        Some(9)
    );
}
