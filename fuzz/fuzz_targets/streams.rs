//! Upstream stream events on any bytes: each line an event's data, fed to every stream
//! decoder; the AWS event-stream framing on the raw bytes. No panic, no unbounded growth.
#![no_main]

use atalaya_translate::{anthropic, eventstream, openai};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut from_openai = openai::StreamDecoder::new();
    let mut from_anthropic = anthropic::StreamDecoder::new(anthropic::Emulation::default());
    for event in data.split(|b| *b == b'\n') {
        let _ = from_openai.decode(event);
        let _ = from_anthropic.decode(event);
    }
    let mut frames = eventstream::Decoder::new();
    let mut messages = Vec::new();
    let _ = frames.push(data, &mut messages);
});
