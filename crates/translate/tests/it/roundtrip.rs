//! OpenAI → Anthropic → OpenAI keeps messages, tool calls and tool results, for requests,
//! answers and streams.

use atalaya_translate::{
    ChatRequest, ChatResponse, Choice, Delta, FinishReason, Image, Message, Part, Role, Target,
    Tool, ToolCall, Usage, anthropic, openai, sse,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,.!?é\"\\\\{}]{1,30}"
}

fn arguments() -> impl Strategy<Value = String> {
    prop::collection::btree_map(
        "[a-z]{1,6}",
        prop_oneof![
            text().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from)
        ],
        0..4,
    )
    .prop_map(|fields| serde_json::to_string(&fields).unwrap())
}

fn tool_name() -> impl Strategy<Value = String> {
    "[a-z_]{1,12}"
}

/// A turn: the user speaks (text, maybe an image), the assistant answers with text and/or
/// tool calls, and every call gets a result.
fn turn(number: usize) -> impl Strategy<Value = Vec<Message>> {
    (
        text(),
        any::<bool>(),
        prop::option::of(text()),
        prop::collection::vec((tool_name(), arguments(), text(), any::<bool>()), 0..3),
    )
        .prop_map(move |(user_text, with_image, answer, calls)| {
            let mut user = vec![Part::Text(user_text)];
            if with_image {
                user.push(Part::Image(Image::from_url(
                    "data:image/png;base64,iVBORw0KGgo=",
                    None,
                )));
            }
            let mut messages = vec![Message::new(Role::User, user)];
            let mut assistant = Message::new(
                Role::Assistant,
                answer.map(Part::Text).into_iter().collect(),
            );
            if assistant.content.is_empty() && calls.is_empty() {
                assistant.content.push(Part::Text("ok".into()));
            }
            for (index, (name, arguments, _, _)) in calls.iter().enumerate() {
                assistant.tool_calls.push(ToolCall {
                    id: format!("call_{number}_{index}"),
                    name: name.clone(),
                    arguments: arguments.clone(),
                });
            }
            messages.push(assistant);
            for (index, (_, _, result, is_error)) in calls.into_iter().enumerate() {
                let mut message = Message::text(Role::Tool, result);
                message.tool_call_id = Some(format!("call_{number}_{index}"));
                message.is_error = is_error;
                messages.push(message);
            }
            messages
        })
}

fn conversation() -> impl Strategy<Value = ChatRequest> {
    (
        prop::option::of(text()),
        prop::collection::vec(0..1u8, 1..4),
        prop::collection::vec((tool_name(), prop::option::of(text())), 0..3),
    )
        .prop_flat_map(|(system, turns, tools)| {
            let turns: Vec<_> = (0..turns.len()).map(turn).collect();
            (Just(system), turns, Just(tools))
        })
        .prop_map(|(system, turns, tools)| {
            let mut messages: Vec<Message> = system
                .map(|s| Message::text(Role::System, s))
                .into_iter()
                .collect();
            messages.extend(turns.into_iter().flatten());
            ChatRequest {
                model: "model".into(),
                messages,
                tools: tools
                    .into_iter()
                    .map(|(name, description)| Tool {
                        name,
                        description,
                        parameters: json!({"type": "object", "properties": {}}),
                        strict: None,
                    })
                    .collect(),
                max_tokens: Some(256),
                ..ChatRequest::default()
            }
        })
}

/// Messages with tool arguments compared as JSON, and OpenAI's `is_error`, which its format
/// cannot carry, cleared.
/// Role, content, calls (id, name, arguments), the result's call id, the result is an error.
type Normal = (
    Role,
    Vec<Part>,
    Vec<(String, String, Value)>,
    Option<String>,
    bool,
);

fn normalized(messages: &[Message], keep_errors: bool) -> Vec<Normal> {
    messages
        .iter()
        .map(|m| {
            let calls = m
                .tool_calls
                .iter()
                .map(|c| {
                    (
                        c.id.clone(),
                        c.name.clone(),
                        serde_json::from_str(&c.arguments).unwrap(),
                    )
                })
                .collect();
            (
                m.role,
                m.content.clone(),
                calls,
                m.tool_call_id.clone(),
                keep_errors && m.is_error,
            )
        })
        .collect()
}

fn through_openai(request: &ChatRequest) -> ChatRequest {
    let body = openai::encode_request(request, &Target::new("openai"), &openai::Quirks::default())
        .unwrap();
    openai::decode_request(&body, &Target::new("openai")).unwrap()
}

fn through_anthropic(request: &ChatRequest) -> ChatRequest {
    let options = anthropic::EncodeOptions {
        default_max_tokens: 1024,
    };
    let (body, _) =
        anthropic::encode_request(request, &Target::new("anthropic"), &options).unwrap();
    anthropic::decode_request(&body, &Target::new("anthropic")).unwrap()
}

fn sse_events(bytes: &[u8]) -> Vec<sse::Event> {
    let mut parser = sse::Parser::new();
    let mut events = Vec::new();
    parser.push(bytes, &mut events).unwrap();
    parser.finish(&mut events);
    events
}

/// What a client assembles from a stream.
#[derive(Debug, Default, PartialEq)]
struct Assembled {
    text: String,
    calls: Vec<(String, String, String)>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

fn assemble(deltas: &[Delta]) -> Assembled {
    let mut out = Assembled::default();
    for delta in deltas {
        match delta {
            Delta::Text { text, .. } => out.text.push_str(text),
            Delta::ToolCallStart { id, name, .. } => {
                out.calls.push((id.clone(), name.clone(), String::new()))
            }
            Delta::ToolCallArguments {
                index, fragment, ..
            } => out.calls[*index as usize].2.push_str(fragment),
            Delta::Finish { reason, .. } => out.finish = Some(*reason),
            Delta::Usage(usage) => out.usage = Some(*usage),
            _ => {}
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn requests_keep_messages_and_tool_calls(request in conversation()) {
        let openai_side = through_openai(&request);
        let back = through_openai(&through_anthropic(&openai_side));
        prop_assert_eq!(normalized(&back.messages, false), normalized(&request.messages, false));
        prop_assert_eq!(&back.tools, &request.tools);
        // Anthropic itself keeps tool-result errors.
        let anthropic_side = through_anthropic(&request);
        prop_assert_eq!(normalized(&anthropic_side.messages, true), normalized(&request.messages, true));
    }

    #[test]
    fn answers_keep_text_and_tool_calls(answer in prop::option::of(text()), calls in prop::collection::vec((tool_name(), arguments()), 0..3), prompt in 0u64..10_000, completion in 0u64..10_000) {
        let mut message = Message::new(Role::Assistant, answer.map(Part::Text).into_iter().collect());
        for (index, (name, arguments)) in calls.iter().enumerate() {
            message.tool_calls.push(ToolCall { id: format!("toolu_{index}"), name: name.clone(), arguments: arguments.clone() });
        }
        let finish = if calls.is_empty() { FinishReason::Stop } else { FinishReason::ToolCalls };
        let response = ChatResponse {
            id: "msg_1".into(),
            model: "m".into(),
            created: 1,
            choices: vec![Choice { index: 0, message, finish_reason: finish, stop_sequence: None }],
            usage: Some(Usage { prompt_tokens: prompt, completion_tokens: completion, ..Usage::default() }),
        };
        let via_anthropic = anthropic::decode_response(&anthropic::encode_response(&response), anthropic::Emulation::default()).unwrap();
        let back = openai::decode_response(&openai::encode_response(&via_anthropic)).unwrap();
        prop_assert_eq!(normalized(&[back.choices[0].message.clone()], false), normalized(&[response.choices[0].message.clone()], false));
        prop_assert_eq!(back.choices[0].finish_reason, finish);
        prop_assert_eq!(back.usage, response.usage);
    }

    #[test]
    fn streams_keep_text_and_tool_calls(pieces in prop::collection::vec(text(), 0..6), calls in prop::collection::vec((tool_name(), arguments(), 1usize..4), 0..3), prompt in 0u64..10_000, completion in 0u64..10_000) {
        let mut deltas = vec![Delta::Start { id: Some("chatcmpl-1".into()), model: Some("m".into()) }];
        deltas.extend(pieces.iter().map(|text| Delta::Text { choice: 0, text: text.clone() }));
        for (index, (name, arguments, splits)) in calls.iter().enumerate() {
            let index = index as u32;
            deltas.push(Delta::ToolCallStart { choice: 0, index, id: format!("call_{index}"), name: name.clone() });
            let size = arguments.len().div_ceil(*splits).max(1);
            let chars: Vec<char> = arguments.chars().collect();
            for fragment in chars.chunks(size) {
                deltas.push(Delta::ToolCallArguments { choice: 0, index, fragment: fragment.iter().collect() });
            }
        }
        let finish = if calls.is_empty() { FinishReason::Stop } else { FinishReason::ToolCalls };
        deltas.push(Delta::Finish { choice: 0, reason: finish, stop_sequence: None });
        deltas.push(Delta::Usage(Usage { prompt_tokens: prompt, completion_tokens: completion, ..Usage::default() }));

        // Provider → canonical → Anthropic client.
        let mut anthropic_out = Vec::new();
        let mut encoder = anthropic::StreamEncoder::new("msg_1".into(), "m".into());
        for delta in deltas.clone() {
            encoder.encode(delta, &mut anthropic_out);
        }
        encoder.finish(&mut anthropic_out);
        // An Anthropic upstream read back, then sent to an OpenAI client.
        let mut decoder = anthropic::StreamDecoder::new(anthropic::Emulation::default());
        let mut openai_out = Vec::new();
        let mut encoder = openai::StreamEncoder::new("chatcmpl-1".into(), "m".into(), true);
        for event in sse_events(&anthropic_out) {
            for delta in decoder.decode(&event.data).unwrap() {
                encoder.encode(delta, &mut openai_out);
            }
        }
        prop_assert!(decoder.complete());
        encoder.finish(&mut openai_out);
        let mut decoder = openai::StreamDecoder::new();
        let mut received = Vec::new();
        for event in sse_events(&openai_out) {
            received.extend(decoder.decode(&event.data).unwrap());
        }
        prop_assert!(decoder.complete());
        let expected = assemble(&deltas);
        let got = assemble(&received);
        prop_assert_eq!(got.text, expected.text);
        prop_assert_eq!(got.finish, expected.finish);
        prop_assert_eq!(got.usage, expected.usage);
        prop_assert_eq!(got.calls.len(), expected.calls.len());
        for (got, expected) in got.calls.iter().zip(&expected.calls) {
            prop_assert_eq!(&got.0, &expected.0);
            prop_assert_eq!(&got.1, &expected.1);
            prop_assert_eq!(serde_json::from_str::<Value>(&got.2).unwrap(), serde_json::from_str::<Value>(&expected.2).unwrap());
        }
    }
}
