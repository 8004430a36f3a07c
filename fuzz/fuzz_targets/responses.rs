//! Upstream answers and error bodies on any bytes, in every format: no panic.
#![no_main]

use atalaya_translate::{anthropic, cohere, gemini, openai};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = openai::decode_response(data);
    let _ = anthropic::decode_response(data, anthropic::Emulation::default());
    let _ = gemini::decode_response(data);
    let _ = cohere::decode_response(data, "fuzz");
    let _ = openai::error_message(data);
    let _ = anthropic::error_message(data);
    let _ = gemini::error_message(data);
    let _ = openai::usage_of(data);
    let _ = openai::chunk_usage(data);
});
