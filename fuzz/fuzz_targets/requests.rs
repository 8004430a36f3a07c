//! Client request bodies (OpenAI and Anthropic) on any bytes: decoding never panics, and a
//! request that decodes is re-encoded for every provider format without panicking — and what
//! we encode as OpenAI or Anthropic decodes again.
#![no_main]

use atalaya_translate::{Target, anthropic, bedrock, chat::ChatRequest, cohere, gemini, openai};
use libfuzzer_sys::fuzz_target;

fn encode_everywhere(request: &ChatRequest) {
    let target = Target::new("fuzz");
    if let Ok(body) = openai::encode_request(request, &target, &openai::Quirks::default()) {
        openai::decode_request(&body, &target).expect("our own OpenAI body decodes");
    }
    let options = anthropic::EncodeOptions {
        default_max_tokens: 1024,
    };
    if let Ok((body, _)) = anthropic::encode_request(request, &target, &options) {
        anthropic::decode_request(&body, &target).expect("our own Anthropic body decodes");
    }
    let _ = gemini::encode_request(request, &target);
    let _ = cohere::encode_request(request, &target);
    let _ = bedrock::encode_request(request, &target);
}

fuzz_target!(|data: &[u8]| {
    let lenient = Target {
        provider: "fuzz".into(),
        drop_unsupported: true,
    };
    for target in [Target::new("fuzz"), lenient] {
        if let Ok(request) = openai::decode_request(data, &target) {
            encode_everywhere(&request);
        }
        if let Ok(request) = anthropic::decode_request(data, &target) {
            encode_everywhere(&request);
        }
    }
});
