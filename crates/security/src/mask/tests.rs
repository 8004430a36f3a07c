use super::*;

fn masker(secrets: &[&str]) -> Masker {
    Masker::new(secrets.iter().copied()).unwrap()
}

#[test]
fn clean_text_is_returned_without_a_copy() {
    let text =
        "The harbor task-force met at dawn; sk- alone and AKIA are just words. Bearer short.";
    assert!(matches!(masker(&[]).mask(text), Cow::Borrowed(_)));
}

#[test]
fn known_secrets_are_replaced_wherever_they_appear() {
    let engine = masker(&["hunter2-but-longer", "tiny"]);
    assert_eq!(
        engine.mask("key=hunter2-but-longer;again:hunter2-but-longer."),
        "key=[REDACTED];again:[REDACTED]."
    );
    // Too short to match safely.
    assert_eq!(engine.mask("tiny"), "tiny");
    assert_eq!(engine.known_secrets(), 1);
}

#[test]
fn credential_formats_are_found_without_being_told() {
    let cases = [
        (
            "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
            "[REDACTED:api-key]",
        ),
        (
            "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz-_0123",
            "[REDACTED:api-key]",
        ),
        ("AKIAIOSFODNN7EXAMPLE", "[REDACTED:aws-access-key]"),
        (
            "ghp_0123456789abcdefghijklmnopqrstuvwxyz",
            "[REDACTED:github-token]",
        ),
        (
            "github_pat_11ABCDEFG0123456789_abcdefghijkl",
            "[REDACTED:github-token]",
        ),
        (
            "AIzaSyA-1234567890abcdefghijklmnopqrstu",
            "[REDACTED:google-api-key]",
        ),
        ("xoxb-1234567890-abcdefghij", "[REDACTED:slack-token]"),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "[REDACTED:jwt]",
        ),
    ];
    for (secret, replacement) in cases {
        let text = format!("before {secret} after");
        assert_eq!(
            masker(&[]).mask(&text),
            format!("before {replacement} after"),
            "{secret}"
        );
    }
}

#[test]
fn bearer_keeps_the_scheme_and_hides_the_token() {
    assert_eq!(
        masker(&[]).mask("authorization: Bearer abc.DEF~ghi+jk/l== next"),
        "authorization: Bearer [REDACTED:bearer] next"
    );
}

#[test]
fn a_pem_private_key_is_hidden_whole_even_when_cut_off() {
    let pem =
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----";
    assert_eq!(
        masker(&[]).mask(&format!("key: {pem} done")),
        "key: [REDACTED:private-key] done"
    );
    assert_eq!(
        masker(&[]).mask("x -----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN"),
        "x [REDACTED:private-key]"
    );
    // A certificate is not a secret.
    let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
    assert_eq!(masker(&[]).mask(cert), cert);
}

#[test]
fn near_misses_stay() {
    for text in [
        "sk-short",
        "ask-abcdefghijklmnopqrstuvwxyz",
        "AKIAIOSFODNN7EXAMPLEX",
        "eyJhbGciOiJIUzI1NiJ9 is not a token",
        "ghp_tooshort",
    ] {
        assert_eq!(masker(&[]).mask(text), text);
    }
}

#[test]
fn a_known_secret_that_looks_like_a_format_is_masked_as_known() {
    let key = "sk-upstream-secret-0123456789abcdef";
    assert_eq!(masker(&[key]).mask(key), REDACTED);
}

#[test]
fn the_handle_switches_engines_for_every_holder() {
    let masking = Masking::new(["first-secret-value"]).unwrap();
    let holder = masking.clone();
    assert_eq!(holder.mask("first-secret-value"), REDACTED);
    masking.set_secrets(["second-secret-value"]).unwrap();
    assert_eq!(holder.mask("first-secret-value"), "first-secret-value");
    assert_eq!(holder.mask("second-secret-value"), REDACTED);
}

#[test]
fn invalid_utf8_is_masked_around() {
    let mut bytes = b"\xff sk-proj-abcdefghijklmnopqrstuvwxyz012345 \xfe".to_vec();
    let masked = masker(&[]).mask_bytes(&bytes).into_owned();
    assert!(!String::from_utf8_lossy(&masked).contains("sk-proj"));
    bytes.truncate(3);
    assert!(matches!(masker(&[]).mask_bytes(&bytes), Cow::Borrowed(_)));
}
