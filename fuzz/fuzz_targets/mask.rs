//! The masking engine on any text: no panic, and no known secret survives in what it returns.
#![no_main]

use atalaya_security::mask::Masker;
use libfuzzer_sys::fuzz_target;

const SECRETS: [&str; 4] = [
    "sk-upstream-secret",
    "hunter2hunter2",
    "AKIAIOSFODNN7EXAMPLE",
    "Bearer-looking-secret",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    static MASKER: std::sync::OnceLock<Option<Masker>> = std::sync::OnceLock::new();
    let Some(masker) = MASKER.get_or_init(|| Masker::new(SECRETS).ok()) else {
        return;
    };
    let masked = masker.mask(text);
    for secret in SECRETS {
        assert!(!masked.contains(secret), "{secret} survived in {masked:?}");
    }
    let _ = masker.mask_bytes(data);
});
