//! The SSE parser on any bytes, split at any point: no panic, no event larger than the limit.
#![no_main]

use atalaya_translate::sse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split) % (rest.len() + 1);
    let mut parser = sse::Parser::new();
    let mut events = Vec::new();
    for part in [&rest[..at], &rest[at..]] {
        if parser.push(part, &mut events).is_err() {
            return;
        }
    }
    parser.finish(&mut events);
    // Split or whole, the same events come out.
    let mut whole = sse::Parser::new();
    let mut again = Vec::new();
    if whole.push(rest, &mut again).is_ok() {
        whole.finish(&mut again);
        assert_eq!(events, again);
    }
});
