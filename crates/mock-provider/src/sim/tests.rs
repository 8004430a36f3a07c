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
