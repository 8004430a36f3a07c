//! The audit log end to end: admin actions, denials and auth failures are recorded with their
//! source address; `atalaya audit verify` passes on the untouched log and names the first broken
//! link after an edit, a deletion, an insertion or a reorder; an export verifies on its own.

use std::path::Path;
use std::process::Command;

use sqlx::Connection as _;

use crate::harness::*;

/// `atalaya audit ARGS --data-dir DIR`: (success, stdout, stderr).
fn audit(data: &Path, args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(binary());
    command.arg("audit").args(args).arg("--data-dir").arg(data);
    for (name, _) in std::env::vars() {
        if name.starts_with("ATALAYA_") {
            command.env_remove(name);
        }
    }
    let output = command.current_dir(data).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A copy of the data directory with `sql` applied to its database.
async fn tampered(data: &Path, sql: &[&'static str]) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for file in ["atalaya.db", "atalaya.db-wal", "hash.key"] {
        if data.join(file).exists() {
            std::fs::copy(data.join(file), copy.path().join(file)).unwrap();
        }
    }
    let url = format!("sqlite://{}", copy.path().join("atalaya.db").display());
    let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for statement in sql {
        sqlx::query(*statement)
            .execute(&mut connection)
            .await
            .unwrap();
    }
    connection.close().await.unwrap();
    copy
}

/// The data plane's busiest routes skip the router (`App::call`); their refusals are
/// audited with the caller's address all the same.
#[tokio::test]
async fn refused_model_calls_are_audited_with_their_source() {
    let server = serve(ServeOptions::default());
    let base = server.url();
    let viewer = create_key(
        &server,
        serde_json::json!({"name": "eyes", "role": "viewer"}),
    )
    .await;
    let viewer = viewer["key"].as_str().unwrap();
    let (status, _, body) = post(
        &format!("{base}/v1/chat/completions"),
        viewer,
        &chat_body("sim-chat", false),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = post(
        &format!("{base}/v1/messages"),
        "sk-atl-wrong",
        r#"{"model": "sim-chat", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}"#,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["type"], "error", "Anthropic's error shape: {body}");
    let page = eventually(std::time::Duration::from_secs(5), || async {
        let (_, page) = get(&format!("{base}/api/v1/audit"), ADMIN_KEY).await;
        (page["data"].as_array().map_or(0, Vec::len) >= 3).then_some(page)
    })
    .await;
    let entries = page["data"].as_array().unwrap();
    let denied = entries
        .iter()
        .find(|e| e["action"] == "auth.denied")
        .unwrap();
    assert_eq!(denied["target"], "POST /v1/chat/completions");
    assert_eq!(denied["source_ip"], "127.0.0.1");
    let failed = entries
        .iter()
        .find(|e| e["action"] == "auth.failure")
        .unwrap();
    assert_eq!(failed["source_ip"], "127.0.0.1", "{failed}");
}

#[tokio::test]
async fn the_audit_log_records_actions_and_detects_every_kind_of_tampering() {
    let server = serve(ServeOptions::default());
    let base = server.url();
    // key.create, then a role denial by that key, a failed authentication, key.revoke.
    let (status, _, created) = post(
        &format!("{base}/api/v1/keys"),
        ADMIN_KEY,
        r#"{"name": "ci"}"#,
    )
    .await;
    assert_eq!(status, 201);
    let key = created["key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    let (status, _) = get(&format!("{base}/api/v1/keys"), key).await;
    assert_eq!(status, 403);
    let (status, _) = get(&format!("{base}/api/v1/keys"), "sk-atl-wrong").await;
    assert_eq!(status, 401);
    // Failed authentications are written in the background: let this one land first.
    eventually(std::time::Duration::from_secs(5), || async {
        let (_, page) = get(&format!("{base}/api/v1/audit"), ADMIN_KEY).await;
        (page["data"].as_array().map_or(0, Vec::len) >= 3).then_some(())
    })
    .await;
    let response = client()
        .delete(format!("{base}/api/v1/keys/{id}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let page = eventually(std::time::Duration::from_secs(5), || async {
        let (_, page) = get(&format!("{base}/api/v1/audit"), ADMIN_KEY).await;
        (page["data"].as_array().map_or(0, Vec::len) >= 4).then_some(page)
    })
    .await;
    let entries = page["data"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .rev()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["key.create", "auth.denied", "auth.failure", "key.revoke"]
    );
    let denied = &entries[2];
    assert_eq!(denied["actor"], id);
    assert_eq!(denied["target"], "GET /api/v1/keys");
    assert_eq!(denied["source_ip"], "127.0.0.1");
    assert_eq!(entries[0]["target"], id);
    // Pages: newest first, `next_before` continues.
    let (_, first) = get(&format!("{base}/api/v1/audit?limit=2"), ADMIN_KEY).await;
    let before = first["next_before"].as_i64().unwrap();
    let (_, second) = get(
        &format!("{base}/api/v1/audit?limit=2&before={before}"),
        ADMIN_KEY,
    )
    .await;
    assert_eq!(second["data"][0]["action"], "auth.denied");
    // A non-admin key may not read it.
    let (status, _) = get(&format!("{base}/api/v1/audit"), "sk-atl-wrong").await;
    assert_eq!(status, 401);
    // Failed authentications are written in the background.
    eventually(std::time::Duration::from_secs(5), || async {
        let (_, page) = get(&format!("{base}/api/v1/audit"), ADMIN_KEY).await;
        (page["data"].as_array().map_or(0, Vec::len) >= 5).then_some(())
    })
    .await;

    let data = server.data_path();
    let Server {
        mut process,
        data_dir,
    } = server;
    process.terminate();
    let (ok, out, err) = audit(&data, &["verify"]);
    assert!(ok, "{err}");
    assert!(out.contains("intact: 5 entries"), "{out}");

    // The export verifies on its own.
    let export = data_dir.path().join("audit.jsonl");
    let (ok, _, err) = audit(&data, &["export", "--output", export.to_str().unwrap()]);
    assert!(ok && err.contains("Exported 5"), "{err}");
    let (ok, out, _) = audit(&data, &["verify", "--file", export.to_str().unwrap()]);
    assert!(ok && out.contains("intact: 5 entries"), "{out}");
    let mut lines: Vec<String> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.swap(1, 2);
    std::fs::write(&export, lines.join("\n")).unwrap();
    let (ok, _, err) = audit(&data, &["verify", "--file", export.to_str().unwrap()]);
    assert!(
        !ok && err.contains("entry 3 does not follow entry 1"),
        "{err}"
    );

    for (sql, broken) in [
        (
            vec!["UPDATE audit_log SET target = 'someone else' WHERE seq = 3"],
            "entry 3 was altered",
        ),
        (
            vec!["DELETE FROM audit_log WHERE seq = 3"],
            "entry 4 does not follow entry 2",
        ),
        (
            vec![
                "INSERT INTO audit_log SELECT seq + 1, at_ms, 'admin', 'key.create', 'key_forged', source_ip, detail, hash, hash FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)",
            ],
            "entry 6 was altered",
        ),
        (
            vec![
                "UPDATE audit_log SET seq = -1 WHERE seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE seq = 4",
                "UPDATE audit_log SET seq = 4 WHERE seq = -1",
            ],
            "entry 3 does not follow entry 2",
        ),
    ] {
        let copy = tampered(&data, &sql).await;
        let (ok, _, err) = audit(copy.path(), &["verify"]);
        assert!(!ok, "tampering not detected: {sql:?}");
        assert!(err.contains(broken), "{sql:?}: {err}");
    }
}
