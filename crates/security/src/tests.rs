use super::*;

#[test]
fn keys_have_the_prefix_and_256_bits() {
    let key = generate_api_key();
    let key = key.expose_secret();
    assert!(key.starts_with(KEY_PREFIX));
    let encoded = &key[KEY_PREFIX.len()..];
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .unwrap();
    assert_eq!(raw.len(), 32);
    assert_ne!(key, generate_api_key().expose_secret());
    assert_eq!(display_prefix(key).len(), KEY_PREFIX.len() + 4);
}

#[test]
fn hash_depends_on_the_server_secret() {
    let one = KeyHasher::new(&SecretString::from("one".to_owned()));
    let two = KeyHasher::new(&SecretString::from("two".to_owned()));
    assert_eq!(one.hash("k"), one.hash("k"));
    assert_ne!(one.hash("k"), two.hash("k"));
    assert!(one.hash("k").ct_eq(&one.hash("k")));
    assert!(!one.hash("k").ct_eq(&one.hash("j")));
}

#[test]
fn secret_file_is_created_private_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("admin.key");
    let (first, created) = load_or_create_secret_file(&path).unwrap();
    assert!(created);
    assert!(!is_too_open(&path));
    let (second, created) = load_or_create_secret_file(&path).unwrap();
    assert!(!created);
    assert_eq!(first.expose_secret(), second.expose_secret());
    std::fs::write(&path, "\n").unwrap();
    assert!(matches!(
        load_or_create_secret_file(&path),
        Err(SecretFileError::Empty { .. })
    ));
}
