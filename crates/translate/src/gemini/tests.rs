use super::*;

#[test]
fn tool_results_are_matched_to_function_names() {
    let mut assistant = Message::new(Role::Assistant, Vec::new());
    assistant.tool_calls.push(ToolCall {
        id: "call_9".into(),
        name: "weather".into(),
        arguments: r#"{"city":"Oslo"}"#.into(),
    });
    let mut result = Message::text(Role::Tool, r#"{"temp": 3}"#);
    result.tool_call_id = Some("call_9".into());
    let request = ChatRequest {
        model: "gemini-2.5-flash".into(),
        messages: vec![
            Message::text(Role::System, "terse"),
            Message::text(Role::User, "Oslo?"),
            assistant,
            result,
        ],
        tools: vec![Tool {
            name: "weather".into(),
            description: None,
            parameters: json!({"type": "object", "additionalProperties": false, "properties": {"city": {"type": ["string", "null"]}}}),
            strict: Some(true),
        }],
        tool_choice: Some(ToolChoice::Tool("weather".into())),
        stop: vec!["x".into()],
        ..ChatRequest::default()
    };
    let body: Value =
        serde_json::from_slice(&encode_request(&request, &Target::new("g")).unwrap()).unwrap();
    assert_eq!(body["systemInstruction"]["parts"][0]["text"], "terse");
    assert_eq!(body["contents"][1]["role"], "model");
    assert_eq!(
        body["contents"][1]["parts"][0]["functionCall"]["args"]["city"],
        "Oslo"
    );
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"]["name"],
        "weather"
    );
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"]["response"]["temp"],
        3
    );
    let parameters = &body["tools"][0]["functionDeclarations"][0]["parameters"];
    assert!(parameters.get("additionalProperties").is_none());
    assert_eq!(
        parameters["properties"]["city"],
        json!({"type": "string", "nullable": true})
    );
    assert_eq!(
        body["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["weather"]})
    );
    assert_eq!(body["generationConfig"]["stopSequences"], json!(["x"]));
}

#[test]
fn image_urls_are_refused() {
    let mut user = Message::new(
        Role::User,
        vec![Part::Image(Image::from_url(
            "https://example.com/a.png",
            None,
        ))],
    );
    user.name = None;
    let request = ChatRequest {
        model: "g".into(),
        messages: vec![user],
        ..ChatRequest::default()
    };
    let error = encode_request(&request, &Target::new("g")).unwrap_err();
    assert!(error.to_string().contains("data: URL"), "{error}");
}

#[test]
fn a_function_call_answer_decodes() {
    let body = br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"weather","args":{"city":"Oslo"}}}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":5,"totalTokenCount":25,"thoughtsTokenCount":3},"modelVersion":"gemini-2.5-flash","responseId":"abc"}"#;
    let response = decode_response(body).unwrap();
    let choice = &response.choices[0];
    assert_eq!(choice.finish_reason, FinishReason::ToolCalls);
    assert_eq!(choice.message.tool_calls[0].name, "weather");
    assert!(choice.message.tool_calls[0].id.starts_with("call_"));
    assert_eq!(response.usage.unwrap().completion_tokens, 8);
    assert_eq!(response.usage.unwrap().reasoning_tokens, 3);
}

#[test]
fn a_stream_completes_on_its_finish_reason() {
    let mut decoder = StreamDecoder::new();
    let first = decoder.decode(br#"{"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":4},"modelVersion":"gemini-2.0-flash","responseId":"r1"}"#).unwrap();
    assert!(!decoder.complete());
    assert_eq!(
        first[0],
        Delta::Start {
            id: Some("r1".into()),
            model: Some("gemini-2.0-flash".into())
        }
    );
    let last = decoder.decode(br#"{"candidates":[{"content":{"parts":[{"text":"lo"}],"role":"model"},"finishReason":"MAX_TOKENS","index":0}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"totalTokenCount":6}}"#).unwrap();
    assert!(decoder.complete());
    assert_eq!(
        last[1],
        Delta::Finish {
            choice: 0,
            reason: FinishReason::Length,
            stop_sequence: None
        }
    );
}

#[test]
fn embeddings_use_the_single_or_batch_call() {
    let (one, batch) = encode_embeddings("text-embedding-004", &["a".to_owned()], Some(8));
    assert!(!batch);
    assert_eq!(
        serde_json::from_slice::<Value>(&one).unwrap()["outputDimensionality"],
        8
    );
    let (many, batch) = encode_embeddings(
        "text-embedding-004",
        &["a".to_owned(), "b".to_owned()],
        None,
    );
    assert!(batch);
    assert_eq!(
        serde_json::from_slice::<Value>(&many).unwrap()["requests"][1]["model"],
        "models/text-embedding-004"
    );
    assert_eq!(
        decode_embeddings(br#"{"embeddings":[{"values":[1.0]},{"values":[2.0]}]}"#).unwrap(),
        vec![vec![1.0], vec![2.0]]
    );
}
