//! Every simulated answer, plain and streamed, decoded with `atalaya-translate`: two
//! implementations written from the same API references must agree.

use atalaya_translate::{Delta, FinishReason, eventstream, sse};
use mock_provider::sim::{Prompt, ToolMode, ToolSpec};
use mock_provider::{anthropic, bedrock, cohere, gemini};
use serde_json::json;

fn prompt(with_tool: bool) -> Prompt {
    let mut prompt =
        Prompt::from_texts("model-x".into(), [("user", "What is the weather in Lima?")]);
    prompt.max_tokens = Some(200);
    if with_tool {
        prompt.tools = vec![ToolSpec {
            name: "weather".into(),
            schema: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        }];
        prompt.tool_mode = ToolMode::Auto;
    }
    prompt
}

fn sse_data(chunks: &[bytes::Bytes]) -> Vec<Vec<u8>> {
    let mut parser = sse::Parser::new();
    let mut events = Vec::new();
    for chunk in chunks {
        parser.push(chunk, &mut events).unwrap();
    }
    parser.finish(&mut events);
    events.into_iter().map(|e| e.data).collect()
}

/// Text, the tool call (name, arguments) and the finish reason a stream assembles to.
fn assemble(deltas: &[Delta]) -> (String, Option<(String, String)>, Option<FinishReason>, u64) {
    let mut text = String::new();
    let mut call: Option<(String, String)> = None;
    let mut finish = None;
    let mut completion = 0;
    for delta in deltas {
        match delta {
            Delta::Text { text: t, .. } => text.push_str(t),
            Delta::ToolCallStart { name, .. } => call = Some((name.clone(), String::new())),
            Delta::ToolCallArguments { fragment, .. } => {
                call.as_mut().unwrap().1.push_str(fragment)
            }
            Delta::Finish { reason, .. } => finish = Some(*reason),
            Delta::Usage(usage) => completion = usage.completion_tokens,
            _ => {}
        }
    }
    (text, call, finish, completion)
}

#[test]
fn anthropic_answers_decode() {
    for with_tool in [false, true] {
        let prompt = prompt(with_tool);
        let plain = atalaya_translate::anthropic::decode_response(
            &anthropic::answer(&prompt),
            Default::default(),
        )
        .unwrap();
        let mut decoder = atalaya_translate::anthropic::StreamDecoder::new(Default::default());
        let deltas: Vec<Delta> = sse_data(&anthropic::events(&prompt))
            .iter()
            .flat_map(|d| decoder.decode(d).unwrap())
            .collect();
        assert!(decoder.complete());
        let (text, call, finish, completion) = assemble(&deltas);
        let choice = &plain.choices[0];
        assert_eq!(text, choice.message.joined_text());
        assert_eq!(finish, Some(choice.finish_reason));
        assert_eq!(completion, plain.usage.unwrap().completion_tokens);
        assert_eq!(
            plain.usage.unwrap().prompt_tokens,
            u64::from(prompt.prompt_tokens)
        );
        if with_tool {
            let (name, arguments) = call.unwrap();
            assert_eq!(name, "weather");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&arguments).unwrap(),
                serde_json::from_str::<serde_json::Value>(&choice.message.tool_calls[0].arguments)
                    .unwrap()
            );
            assert_eq!(finish, Some(FinishReason::ToolCalls));
        } else {
            assert!(!text.is_empty());
        }
    }
}

#[test]
fn gemini_answers_decode_in_both_stream_framings() {
    for with_tool in [false, true] {
        let prompt = prompt(with_tool);
        let plain = atalaya_translate::gemini::decode_response(&gemini::answer(&prompt)).unwrap();
        let mut decoder = atalaya_translate::gemini::StreamDecoder::new();
        let deltas: Vec<Delta> = sse_data(&gemini::sse_events(&prompt))
            .iter()
            .flat_map(|d| decoder.decode(d).unwrap())
            .collect();
        assert!(decoder.complete());
        let (text, call, finish, _) = assemble(&deltas);
        assert_eq!(text, plain.choices[0].message.joined_text());
        assert_eq!(finish, Some(plain.choices[0].finish_reason));
        assert_eq!(call.is_some(), with_tool);
        let array: Vec<u8> = gemini::array_chunks(&prompt).concat();
        let objects: Vec<serde_json::Value> = serde_json::from_slice(&array).unwrap();
        assert_eq!(objects.len(), gemini::stream_objects(&prompt).len());
    }
}

#[test]
fn cohere_answers_decode() {
    for with_tool in [false, true] {
        let prompt = prompt(with_tool);
        let plain = atalaya_translate::cohere::decode_response(&cohere::answer(&prompt), "model-x")
            .unwrap();
        let mut decoder = atalaya_translate::cohere::StreamDecoder::new();
        let deltas: Vec<Delta> = sse_data(&cohere::events(&prompt))
            .iter()
            .flat_map(|d| decoder.decode(d).unwrap())
            .collect();
        assert!(decoder.complete());
        let (text, call, finish, completion) = assemble(&deltas);
        assert_eq!(text, plain.choices[0].message.joined_text());
        assert_eq!(finish, Some(plain.choices[0].finish_reason));
        assert_eq!(completion, plain.usage.unwrap().completion_tokens);
        assert_eq!(
            call.map(|c| c.0),
            plain.choices[0]
                .message
                .tool_calls
                .first()
                .map(|c| c.name.clone())
        );
    }
}

#[test]
fn bedrock_answers_decode() {
    for with_tool in [false, true] {
        let prompt = prompt(with_tool);
        let plain = atalaya_translate::bedrock::decode_response(
            &bedrock::answer(&prompt),
            "model-x",
            Default::default(),
        )
        .unwrap();
        let mut frames = eventstream::Decoder::new();
        let mut messages = Vec::new();
        for frame in bedrock::frames(&prompt) {
            frames.push(&frame, &mut messages).unwrap();
        }
        let mut decoder = atalaya_translate::bedrock::StreamDecoder::new(Default::default());
        let deltas: Vec<Delta> = messages
            .iter()
            .flat_map(|m| decoder.decode(m).unwrap())
            .collect();
        assert!(decoder.complete());
        let (text, call, finish, completion) = assemble(&deltas);
        assert_eq!(text, plain.choices[0].message.joined_text());
        assert_eq!(finish, Some(plain.choices[0].finish_reason));
        assert_eq!(completion, plain.usage.unwrap().completion_tokens);
        assert_eq!(call.is_some(), with_tool);
    }
    let mut messages = Vec::new();
    eventstream::Decoder::new()
        .push(
            &bedrock::exception_frame("throttlingException", "slow down"),
            &mut messages,
        )
        .unwrap();
    let failure = atalaya_translate::bedrock::StreamDecoder::new(Default::default())
        .decode(&messages[0])
        .unwrap_err();
    assert!(failure.to_string().contains("slow down"));
}
