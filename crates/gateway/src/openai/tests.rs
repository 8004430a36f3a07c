use super::*;

fn value(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn upstream_body_replaces_model_and_keeps_everything_else() {
    let body = br#"{"model":"fast","messages":[{"role":"user","content":"hi \u00e9"}],"temperature":0.5,"x_vendor":{"a":[1,2]}}"#;
    let request = ChatRequest::parse(body).unwrap();
    assert_eq!(request.model, "fast");
    assert!(!request.stream);
    let upstream = value(&request.upstream_body("gpt-4o-mini", &Quirks::default()));
    let mut expected = value(body);
    expected["model"] = "gpt-4o-mini".into();
    assert_eq!(upstream, expected);
}

#[test]
fn streams_always_ask_for_usage_and_remember_who_asked() {
    let plain = ChatRequest::parse(
        br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}"#,
    )
    .unwrap();
    assert!(plain.stream && !plain.client_wants_usage);
    assert_eq!(
        value(&plain.upstream_body("u", &Quirks::default()))["stream_options"]["include_usage"],
        true
    );

    let asked = ChatRequest::parse(
        br#"{"model":"m","stream":true,"stream_options":{"include_usage":true,"other":1},"messages":[{"role":"user","content":"x"}]}"#,
    )
    .unwrap();
    assert!(asked.client_wants_usage);
    let upstream = value(&asked.upstream_body("u", &Quirks::default()));
    assert_eq!(upstream["stream_options"]["other"], 1);

    let declined = ChatRequest::parse(
        br#"{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"x"}]}"#,
    )
    .unwrap();
    assert!(!declined.client_wants_usage);
    assert_eq!(
        value(&declined.upstream_body("u", &Quirks::default()))["stream_options"]["include_usage"],
        true
    );
}

#[test]
fn bad_requests_name_the_field() {
    let cases: &[(&[u8], &str, &str)] = &[
        (b"", "invalid_json", ""),
        (b"{not json", "invalid_json", ""),
        (b"[1,2]", "invalid_json", ""),
        (
            br#"{"messages":[{"role":"user","content":"x"}]}"#,
            "missing_required_parameter",
            "model",
        ),
        (
            br#"{"model":"m"}"#,
            "missing_required_parameter",
            "messages",
        ),
        (
            br#"{"model":"m","messages":null}"#,
            "missing_required_parameter",
            "messages",
        ),
        (br#"{"model":"m","messages":[]}"#, "empty_array", "messages"),
        (
            br#"{"model":"m","messages":"hi"}"#,
            "invalid_type",
            "messages",
        ),
        (
            br#"{"model":5,"messages":[{"role":"user","content":"x"}]}"#,
            "invalid_type",
            "model",
        ),
        (
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
            "invalid_type",
            "temperature",
        ),
        (
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}"#,
            "invalid_type",
            "max_tokens",
        ),
        (
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
            "invalid_type",
            "stream",
        ),
        (
            br#"{"model":"m","messages":[{"content":"x"}]}"#,
            "missing_required_parameter",
            "messages[0].role",
        ),
        (
            br#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
            "invalid_value",
            "messages[0].role",
        ),
        (
            br#"{"model":"m","messages":[{"role":"user","content":7}]}"#,
            "invalid_type",
            "messages[0].content",
        ),
        (
            br#"{"model":"m","messages":[3]}"#,
            "invalid_type",
            "messages[0]",
        ),
        // The first wrong message is named, whatever is wrong with a later one.
        (
            br#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"wizard"},3]}"#,
            "invalid_value",
            "messages[1].role",
        ),
        (
            br#"{"model":"m","messages":[{"role":"user","content":"x"},3,{"role":"wizard"}]}"#,
            "invalid_type",
            "messages[1]",
        ),
        (
            br#"{"model":"m","messages":[{"role":7,"content":"x"}]}"#,
            "invalid_type",
            "messages[0].role",
        ),
        (
            br#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"user","content":{}}]}"#,
            "invalid_type",
            "messages[1].content",
        ),
        (
            br#"{"model":"m","messages":[{"role":"us\u0065rs","content":"x"}]}"#,
            "invalid_value",
            "messages[0].role",
        ),
    ];
    for (body, code, param) in cases {
        let error = ChatRequest::parse(body)
            .err()
            .unwrap_or_else(|| panic!("accepted {}", String::from_utf8_lossy(body)));
        assert_eq!(error.code, *code, "{}", String::from_utf8_lossy(body));
        assert_eq!(
            error.param.as_deref().unwrap_or(""),
            *param,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(error.status, 400);
    }
}

#[test]
fn escaped_names_and_roles_read_as_their_text() {
    // `\u0065` is `e`: the same field names and role, spelled with escapes.
    let request = ChatRequest::parse(
        br#"{"mod\u0065l":"m","messag\u0065s":[{"rol\u0065":"us\u0065r","content":"x"}],"str\u0065am":true}"#,
    )
    .unwrap();
    assert_eq!(request.model, "m");
    assert!(request.stream);
}

#[test]
fn nulls_are_accepted_for_optional_fields() {
    ChatRequest::parse(br#"{"model":"m","messages":[{"role":"user","content":null}],"temperature":null,"stop":null}"#).unwrap();
}

#[test]
fn embeddings_require_input() {
    assert_eq!(
        EmbeddingRequest::parse(br#"{"model":"e"}"#)
            .err()
            .unwrap()
            .param
            .as_deref(),
        Some("input")
    );
    let request =
        EmbeddingRequest::parse(br#"{"model":"e","input":["a"],"dimensions":8}"#).unwrap();
    assert_eq!(value(&request.upstream_body("up"))["model"], "up");
    assert_eq!(
        EmbeddingRequest::parse(br#"{"model":"e","input":"a","dimensions":"8"}"#)
            .err()
            .unwrap()
            .code,
        "invalid_type"
    );
}

#[test]
fn quirks_rename_the_output_limit_and_drop_stream_options() {
    let request = ChatRequest::parse(
        br#"{"model":"m","stream":true,"max_completion_tokens":9,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}"#,
    )
    .unwrap();
    let quirks = Quirks {
        legacy_max_tokens: true,
        stream_options: false,
        ..Quirks::default()
    };
    let body = value(&request.upstream_body("u", &quirks));
    assert_eq!(body["max_tokens"], 9);
    assert!(body.get("max_completion_tokens").is_none());
    assert!(body.get("stream_options").is_none());
    assert!(!request.passes_through(&quirks));
    assert!(request.passes_through(&Quirks::default()));
}
