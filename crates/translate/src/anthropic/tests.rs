use super::*;

fn target() -> Target {
    Target::new("claude")
}

fn options() -> EncodeOptions {
    EncodeOptions {
        default_max_tokens: 4096,
    }
}

#[test]
fn an_inbound_request_with_tool_results_decodes() {
    let body = br#"{
        "model": "claude-sonnet-4-20250514", "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "And tomorrow?"}
            ]}
        ],
        "tools": [{"name": "weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "stop_sequences": ["\n\nHuman:"], "top_k": 5, "stream": true,
        "metadata": {"user_id": "u-1"}, "thinking": {"type": "enabled", "budget_tokens": 2048}
    }"#;
    let request = decode_request(body, &target()).unwrap();
    let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::System,
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::User
        ]
    );
    assert_eq!(
        request.messages[2].tool_calls[0].arguments,
        r#"{"city":"Paris"}"#
    );
    assert_eq!(request.messages[3].joined_text(), "18C");
    assert_eq!(request.tool_choice, Some(ToolChoice::Required));
    assert_eq!(request.parallel_tool_calls, Some(false));
    assert_eq!(request.top_k, Some(5));
    assert_eq!(request.user.as_deref(), Some("u-1"));
    assert_eq!(request.reasoning, Some(Reasoning::Budget(2048)));
    assert!(request.stream_usage);
}

#[test]
fn missing_max_tokens_is_reported_like_anthropic_does() {
    let error = decode_request(br#"{"model": "m", "messages": []}"#, &target()).unwrap_err();
    assert_eq!(error.to_string(), "max_tokens: Field required");
}

#[test]
fn encoding_merges_tool_results_into_one_user_turn() {
    let mut assistant = Message::new(Role::Assistant, Vec::new());
    for id in ["a", "b"] {
        assistant.tool_calls.push(ToolCall {
            id: id.into(),
            name: "f".into(),
            arguments: "{}".into(),
        });
    }
    let mut messages = vec![
        Message::text(Role::System, "sys"),
        Message::text(Role::User, "go"),
        assistant,
    ];
    for id in ["a", "b"] {
        let mut result = Message::text(Role::Tool, format!("result {id}"));
        result.tool_call_id = Some(id.into());
        messages.push(result);
    }
    let request = ChatRequest {
        model: "claude".into(),
        messages,
        n: Some(1),
        ..ChatRequest::default()
    };
    let (body, emulation) = encode_request(&request, &target(), &options()).unwrap();
    assert!(!emulation.json_tool);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["system"][0]["text"], "sys");
    assert_eq!(body["max_tokens"], 4096);
    let turns = body["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3);
    assert_eq!(turns[2]["role"], "user");
    assert_eq!(turns[2]["content"].as_array().unwrap().len(), 2);
    assert_eq!(turns[2]["content"][1]["tool_use_id"], "b");
}

#[test]
fn what_anthropic_cannot_take_is_refused() {
    let request = ChatRequest {
        model: "claude".into(),
        messages: vec![Message::text(Role::User, "x")],
        n: Some(2),
        ..ChatRequest::default()
    };
    let error = encode_request(&request, &target(), &options()).unwrap_err();
    assert!(
        matches!(error, TranslateError::Unsupported { ref feature, .. } if feature == "n"),
        "{error}"
    );
    let hot = ChatRequest {
        temperature: Some(1.5),
        n: None,
        ..request
    };
    assert!(encode_request(&hot, &target(), &options()).is_err());
    let dropping = Target {
        drop_unsupported: true,
        ..target()
    };
    let (body, _) = encode_request(&hot, &dropping, &options()).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["temperature"],
        1.0
    );
}

#[test]
fn json_schema_output_is_emulated_with_a_forced_tool() {
    let request = ChatRequest {
        model: "claude".into(),
        messages: vec![Message::text(Role::User, "x")],
        response_format: Some(ResponseFormat::JsonSchema {
            name: "answer".into(),
            description: None,
            schema: json!({"type": "object", "properties": {"a": {"type": "integer"}}}),
            strict: None,
        }),
        ..ChatRequest::default()
    };
    let (body, emulation) = encode_request(&request, &target(), &options()).unwrap();
    assert!(emulation.json_tool);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": JSON_TOOL})
    );
    let answer = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[{"type":"tool_use","id":"toolu_9","name":"json_response","input":{"a":1}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":5}}"#;
    let response = decode_response(answer, emulation).unwrap();
    assert_eq!(response.choices[0].message.joined_text(), r#"{"a":1}"#);
    assert_eq!(response.choices[0].finish_reason, FinishReason::Stop);
    assert!(response.choices[0].message.tool_calls.is_empty());
}

/// The event sequence of the "streaming request with tool use" example in Anthropic's docs.
#[test]
fn a_documented_tool_use_stream_decodes() {
    let events = [
        r#"{"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-1","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type": "ping"}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San Francisco, CA\"}"}}"#,
        r#"{"type":"content_block_stop","index":1}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
        r#"{"type":"message_stop"}"#,
    ];
    let mut decoder = StreamDecoder::new(Emulation::default());
    let deltas: Vec<Delta> = events
        .iter()
        .flat_map(|e| decoder.decode(e.as_bytes()).unwrap())
        .collect();
    assert!(decoder.complete());
    let arguments: String = deltas
        .iter()
        .filter_map(|d| match d {
            Delta::ToolCallArguments { fragment, .. } => Some(fragment.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(arguments, r#"{"location": "San Francisco, CA"}"#);
    assert!(deltas.contains(&Delta::Text {
        choice: 0,
        text: "Okay".into()
    }));
    assert!(deltas.contains(&Delta::Finish {
        choice: 0,
        reason: FinishReason::ToolCalls,
        stop_sequence: None
    }));
    assert_eq!(
        deltas.last(),
        Some(&Delta::Usage(Usage {
            prompt_tokens: 472,
            completion_tokens: 89,
            ..Usage::default()
        }))
    );
}

#[test]
fn an_error_event_is_a_provider_failure() {
    let mut decoder = StreamDecoder::new(Emulation::default());
    let failure = decoder
        .decode(
            br#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#,
        )
        .unwrap_err();
    assert_eq!(
        failure,
        StreamFailure::Provider(StreamError {
            kind: "overloaded_error".into(),
            message: "Overloaded".into()
        })
    );
}

#[test]
fn the_encoder_opens_and_closes_blocks_in_order() {
    let mut encoder = StreamEncoder::new("msg_x".into(), "m".into());
    let mut out = Vec::new();
    for delta in [
        Delta::Start {
            id: None,
            model: None,
        },
        Delta::Text {
            choice: 0,
            text: "Hi".into(),
        },
        Delta::ToolCallStart {
            choice: 0,
            index: 0,
            id: "call_1".into(),
            name: "f".into(),
        },
        Delta::ToolCallArguments {
            choice: 0,
            index: 0,
            fragment: "{}".into(),
        },
        Delta::Finish {
            choice: 0,
            reason: FinishReason::ToolCalls,
            stop_sequence: None,
        },
        Delta::Usage(Usage {
            prompt_tokens: 4,
            completion_tokens: 2,
            ..Usage::default()
        }),
    ] {
        encoder.encode(delta, &mut out);
    }
    encoder.finish(&mut out);
    let text = String::from_utf8(out).unwrap();
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(text.contains(r#""stop_reason":"tool_use""#));
    assert!(text.contains(r#""input_tokens":4"#) && text.contains(r#""output_tokens":2"#));
}

#[test]
fn thinking_streams_with_its_signature_both_ways() {
    let events = [
        r#"{"type":"message_start","message":{"id":"msg_1","model":"claude","usage":{"input_tokens":10,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"42"}}"#,
        r#"{"type":"content_block_stop","index":1}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":30}}"#,
        r#"{"type":"message_stop"}"#,
    ];
    let mut decoder = StreamDecoder::new(Emulation::default());
    let deltas: Vec<Delta> = events
        .iter()
        .flat_map(|e| decoder.decode(e.as_bytes()).unwrap())
        .collect();
    assert!(deltas.contains(&Delta::Thinking {
        choice: 0,
        text: "Let me think".into()
    }));
    assert!(deltas.contains(&Delta::ThinkingSignature {
        choice: 0,
        signature: "EqQBCgIYAhIM".into()
    }));
    // Re-encoded for an Anthropic client: a thinking block with its signature, then text.
    let mut encoder = StreamEncoder::new("msg_2".into(), "m".into());
    let mut out = Vec::new();
    for delta in deltas {
        encoder.encode(delta, &mut out);
    }
    encoder.finish(&mut out);
    let text = String::from_utf8(out).unwrap();
    let thinking = text.find("thinking_delta").unwrap();
    let signature = text.find("signature_delta").unwrap();
    let answer = text.find("text_delta").unwrap();
    assert!(thinking < signature && signature < answer, "{text}");
    // An OpenAI client sees the thinking as reasoning_content.
    let mut encoder = crate::openai::StreamEncoder::new("c".into(), "m".into(), false);
    let mut out = Vec::new();
    encoder.encode(
        Delta::Thinking {
            choice: 0,
            text: "hmm".into(),
        },
        &mut out,
    );
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains(r#""reasoning_content":"hmm""#)
    );
}
