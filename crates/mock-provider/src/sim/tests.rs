use super::*;

#[test]
fn reply_is_deterministic_and_depends_on_the_prompt() {
    let first = reply(seed_of(b"hello"), None);
    assert_eq!(first, reply(seed_of(b"hello"), None));
    assert_ne!(first.text(), reply(seed_of(b"goodbye"), None).text());
    assert!(
        first.tokens() >= 12 && first.tokens() <= 60,
        "{}",
        first.tokens()
    );
    assert_eq!(first.finish_reason, FinishReason::Stop);
    assert!(first.text().ends_with('.'));
}

#[test]
fn max_tokens_cuts_the_reply_with_length() {
    let cut = reply(seed_of(b"hello"), Some(3));
    assert_eq!(cut.tokens(), 3);
    assert_eq!(cut.finish_reason, FinishReason::Length);
}

#[test]
fn embeddings_are_unit_length_and_stable() {
    let vector = embedding(b"abc", 64);
    assert_eq!(vector.len(), 64);
    let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    assert_eq!(vector, embedding(b"abc", 64));
    assert_ne!(vector, embedding(b"abd", 64));
}

#[test]
fn prompt_tokens_follow_openai_framing() {
    assert_eq!(
        chat_prompt_tokens(["abcd", "abcdefgh"]),
        3 + (3 + 1) + (3 + 2)
    );
    assert_eq!(estimate_tokens(""), 0);
    assert_eq!(estimate_tokens("a"), 1);
}

#[test]
fn tool_arguments_follow_the_schema() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "optional": {"type": "boolean"}
        },
        "required": ["city", "unit", "days", "tags"]
    });
    let tools = [ToolSpec {
        name: "weather".into(),
        schema,
    }];
    let Output::Call {
        name, arguments, ..
    } = decide(1, None, &tools, &ToolMode::Auto, false, None)
    else {
        panic!("expected a call");
    };
    assert_eq!(name, "weather");
    let arguments: serde_json::Value = serde_json::from_str(&arguments).unwrap();
    assert_eq!(arguments["unit"], "celsius");
    assert!(
        arguments["city"].is_string() && arguments["days"].is_u64() && arguments["tags"].is_array()
    );
    assert!(arguments.get("optional").is_none());
}

#[test]
fn after_a_tool_result_the_model_answers_in_text() {
    let tools = [ToolSpec {
        name: "f".into(),
        schema: serde_json::json!({"type": "object"}),
    }];
    assert!(matches!(
        decide(1, None, &tools, &ToolMode::Auto, true, None),
        Output::Text(_)
    ));
    assert!(matches!(
        decide(1, None, &tools, &ToolMode::Required, true, None),
        Output::Call { .. }
    ));
    assert!(matches!(
        decide(1, None, &tools, &ToolMode::None, false, None),
        Output::Text(_)
    ));
}

#[test]
fn json_output_matches_the_schema() {
    let schema = serde_json::json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    let Output::Text(reply) = decide(3, None, &[], &ToolMode::Auto, false, Some(&schema)) else {
        panic!("expected text");
    };
    let value: serde_json::Value = serde_json::from_str(&reply.text()).unwrap();
    assert!(value["n"].is_u64());
}
