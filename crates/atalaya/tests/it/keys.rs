//! Admin key, virtual keys and their lifecycle, through the API and the CLI.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use crate::harness::*;

#[tokio::test]
async fn missing_or_wrong_keys_get_openai_401s() {
    let server = serve(ServeOptions::default());
    let url = format!("{}/v1/chat/completions", server.url());
    let response = client()
        .post(&url)
        .body(chat_body("sim-chat", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("x-request-id").is_some());
    let value: serde_json::Value = response.json().await.unwrap();
    assert_eq!(value["error"]["code"], "missing_api_key");
    let (status, _, value) =
        post(&url, "sk-atl-not-a-real-key", &chat_body("sim-chat", false)).await;
    assert_eq!(
        (status, value["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    // x-api-key works as well as Bearer.
    let response = client()
        .post(&url)
        .header("x-api-key", ADMIN_KEY)
        .body(chat_body("sim-chat", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn virtual_keys_work_until_revoked_and_are_not_admins() {
    let server = serve(ServeOptions::default());
    let (status, _, created) = post(
        &format!("{}/api/v1/keys", server.url()),
        ADMIN_KEY,
        r#"{"name":"team-a"}"#,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-atl-") && key.len() >= 7 + 43);
    assert_eq!(created["name"], "team-a");

    let chat = format!("{}/v1/chat/completions", server.url());
    let (status, _, _) = post(&chat, &key, &chat_body("sim-chat", false)).await;
    assert_eq!(status, 200);
    let (status, value) = get(&format!("{}/api/v1/keys", server.url()), &key).await;
    assert_eq!(
        (status, value["error"]["code"].as_str()),
        (403, Some("permission_denied"))
    );

    let (status, listed) = get(&format!("{}/api/v1/keys", server.url()), ADMIN_KEY).await;
    assert_eq!(status, 200);
    let entry = &listed["data"][0];
    assert_eq!(entry["id"], id.as_str());
    assert!(
        entry.get("key").is_none() && !listed.to_string().contains(&key),
        "a listed key shows its secret"
    );
    assert_eq!(entry["key_prefix"], &key[..11]);

    let response = client()
        .delete(format!("{}/api/v1/keys/{id}", server.url()))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _, value) = post(&chat, &key, &chat_body("sim-chat", false)).await;
    assert_eq!(
        (status, value["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );

    let response = client()
        .delete(format!("{}/api/v1/keys/key_nope", server.url()))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // The database holds the hash, never the key.
    let database = std::fs::read(server.database()).unwrap();
    let wal = std::fs::read(server.database().with_extension("db-wal")).unwrap_or_default();
    for bytes in [&database, &wal] {
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "plaintext key in the database"
        );
    }
    assert!(!server.process.output().contains(&key), "key in the logs");
}

#[tokio::test]
async fn generated_admin_key_is_private_and_never_logged() {
    let server = serve(ServeOptions {
        admin_key: None,
        ..ServeOptions::default()
    });
    let path = server.data_path().join("admin.key");
    let admin_key = read_file(&path).trim().to_owned();
    assert!(admin_key.len() >= 43);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let output = server.process.output();
    assert!(output.contains("admin.key"), "{output}");
    assert!(!output.contains(&admin_key), "admin key printed in the log");
    let (status, _, _) = post(
        &format!("{}/v1/chat/completions", server.url()),
        &admin_key,
        &chat_body("sim-chat", false),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_keys_command_creates_lists_and_revokes() {
    let server = serve(ServeOptions::default());
    let run = |args: &[&str]| {
        let output = Command::new(binary())
            .arg("keys")
            .args(args)
            .args(["--server", &server.url(), "--json"])
            .env("ATALAYA_ADMIN_KEY", ADMIN_KEY)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let limited = run(&[
        "create",
        "--name",
        "limited",
        "--role",
        "viewer",
        "--team",
        "blue",
        "--models",
        "sim-chat,gpt-4o",
        "--expires-in-days",
        "1",
        "--metadata",
        r#"{"owner": "ana"}"#,
    ]);
    assert_eq!(limited["role"], "viewer");
    assert_eq!(limited["team"], "blue");
    assert_eq!(limited["models"], serde_json::json!(["sim-chat", "gpt-4o"]));
    assert_eq!(limited["metadata"]["owner"], "ana");
    assert!(limited["expires_at_ms"].as_i64().unwrap() > 1_700_000_000_000);
    let created = run(&["create", "--name", "cli"]);
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let listed = run(&["list"]);
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id.as_str())
    );
    let (status, _, _) = post(
        &format!("{}/v1/chat/completions", server.url()),
        &key,
        &chat_body("sim-chat", false),
    )
    .await;
    assert_eq!(status, 200);
    let revoked = run(&["revoke", &id]);
    assert!(revoked["revoked_at_ms"].as_i64().is_some());
    let (status, _, _) = post(
        &format!("{}/v1/chat/completions", server.url()),
        &key,
        &chat_body("sim-chat", false),
    )
    .await;
    assert_eq!(status, 401);

    // A wrong admin key is a clear failure with a non-zero exit.
    let output = Command::new(binary())
        .args([
            "keys",
            "list",
            "--server",
            &server.url(),
            "--admin-key",
            "wrong",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"));
}
