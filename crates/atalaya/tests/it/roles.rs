//! Roles, model allowlists, expiry and key updates through the API.

use serde_json::{Value, json};

use crate::harness::*;

async fn create(server: &Server, caller: &str, body: Value) -> (u16, Value) {
    let (status, _, created) = post(
        &format!("{}/api/v1/keys", server.url()),
        caller,
        &body.to_string(),
    )
    .await;
    (status, created)
}

async fn patch(server: &Server, caller: &str, id: &str, body: Value) -> (u16, Value) {
    let response = client()
        .patch(format!("{}/api/v1/keys/{id}", server.url()))
        .bearer_auth(caller)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn each_role_gets_what_the_table_says() {
    let server = serve(ServeOptions::default());
    let base = server.url();
    let mut keys = std::collections::HashMap::new();
    for role in ["operator", "developer", "viewer"] {
        let (status, created) = create(
            &server,
            ADMIN_KEY,
            json!({"name": role, "role": role, "team": "blue"}),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["role"], role);
        assert_eq!(created["team"], "blue");
        keys.insert(role, created["key"].as_str().unwrap().to_owned());
    }
    let chat = format!("{base}/v1/chat/completions");
    let body = chat_body("sim-chat", false);
    // (role, chat, read logs, read audit, create a developer key)
    for (role, can_chat, can_read, can_audit, can_manage) in [
        ("operator", true, true, true, true),
        ("developer", true, false, false, false),
        ("viewer", false, true, false, false),
    ] {
        let key = &keys[role];
        let (status, _, answer) = post(&chat, key, &body).await;
        assert_eq!(status == 200, can_chat, "{role} chat: {answer}");
        if !can_chat {
            assert_eq!(status, 403);
            assert_eq!(answer["error"]["code"], "permission_denied");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("`call_models`")
            );
        }
        let (status, _) = get(&format!("{base}/api/v1/logs"), key).await;
        assert_eq!(status == 200, can_read, "{role} logs");
        let (status, answer) = get(&format!("{base}/api/v1/audit"), key).await;
        assert_eq!(status == 200, can_audit, "{role} audit");
        if !can_audit {
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("a `{role}` key has")),
                "{answer}"
            );
        }
        let (status, _) = create(&server, key, json!({"role": "developer"})).await;
        assert_eq!(status == 201, can_manage, "{role} creates keys");
    }
    // An operator cannot mint or touch keys above developer.
    let (status, answer) = create(&server, &keys["operator"], json!({"role": "admin"})).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot manage `admin` keys")
    );
    let (_, listed) = get(&format!("{base}/api/v1/keys"), ADMIN_KEY).await;
    let operator_id = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "operator")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = patch(
        &server,
        &keys["operator"],
        &operator_id,
        json!({"name": "x"}),
    )
    .await;
    assert_eq!(status, 403);
    // Denials are in the audit log.
    let (_, audit) = get(&format!("{base}/api/v1/audit?limit=1000"), ADMIN_KEY).await;
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "auth.denied" && e["target"] == "POST /v1/chat/completions")
    );
}

#[tokio::test]
async fn allowlists_expiry_and_updates_take_effect_at_once() {
    let upstream = mock(MockOptions::default());
    let server = serve(ServeOptions {
        config: &config_with_openai_upstream(&upstream, "[sim]\nenabled = true\n"),
        env: vec![("UPSTREAM_KEY", "sk-upstream-secret".to_owned())],
        ..ServeOptions::default()
    });
    let base = server.url();
    let (status, created) = create(
        &server,
        ADMIN_KEY,
        json!({"name": "limited", "models": ["sim-chat"], "metadata": {"owner": "ana"}}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let chat = format!("{base}/v1/chat/completions");
    let (status, _, _) = post(&chat, &key, &chat_body("sim-chat", false)).await;
    assert_eq!(status, 200);
    let (status, _, answer) = post(&chat, &key, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(status, 403);
    assert_eq!(answer["error"]["code"], "model_not_allowed");
    let (_, models) = get(&format!("{base}/v1/models"), &key).await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sim-chat"]);

    // Widening the list holds from the next request (the cache forgets the key).
    let (status, updated) = patch(
        &server,
        ADMIN_KEY,
        &id,
        json!({"models": null, "team": "red"}),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert!(updated["models"].is_null());
    assert_eq!(updated["metadata"]["owner"], "ana");
    let (status, _, _) = post(&chat, &key, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(status, 200);
    let (_, shown) = get(&format!("{base}/api/v1/keys/{id}"), ADMIN_KEY).await;
    assert_eq!(shown["team"], "red");

    // Expiry: a key past its time is refused.
    let soon = atalaya_now_ms() + 300;
    let (status, _) = patch(&server, ADMIN_KEY, &id, json!({"expires_at_ms": soon})).await;
    assert_eq!(status, 200);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let (status, _, answer) = post(&chat, &key, &chat_body("sim-chat", false)).await;
    assert_eq!(status, 401);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    // Bad input names the field.
    for (body, param) in [
        (json!({"role": "root"}), "role"),
        (json!({"models": []}), "models"),
        (json!({"metadata": [1]}), "metadata"),
        (json!({"expires_at_ms": 1}), "expires_at_ms"),
    ] {
        let (status, answer) = create(&server, ADMIN_KEY, body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(answer["error"]["param"], param);
    }
    let (status, _) = patch(&server, ADMIN_KEY, "key_missing", json!({"name": "x"})).await;
    assert_eq!(status, 404);
}

fn atalaya_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Every role against every endpoint of atalaya's API and the data plane.
#[tokio::test]
async fn the_permission_matrix_holds_for_every_endpoint() {
    let server = serve(ServeOptions::default());
    let base = server.url();
    let mut callers: Vec<(&str, String)> = vec![("admin", ADMIN_KEY.to_owned())];
    for role in ["operator", "developer", "viewer"] {
        let (_, created) = create(&server, ADMIN_KEY, json!({"role": role})).await;
        callers.push((role, created["key"].as_str().unwrap().to_owned()));
    }
    // (method, path, body, permission)
    let target = |server: &Server| {
        let server_url = server.url();
        async move {
            let (_, _, created) = post(
                &format!("{server_url}/api/v1/keys"),
                ADMIN_KEY,
                r#"{"role": "viewer"}"#,
            )
            .await;
            created["id"].as_str().unwrap().to_owned()
        }
    };
    let chat = chat_body("sim-chat", false);
    let compare = json!({"models": ["sim-chat"], "prompt": "hi"}).to_string();
    for (role, key) in &callers {
        let victim = target(&server).await;
        let endpoints: Vec<(&str, String, String, &str)> = vec![
            (
                "POST",
                "/v1/chat/completions".into(),
                chat.clone(),
                "call_models",
            ),
            (
                "POST",
                "/v1/embeddings".into(),
                json!({"model": "sim-embed", "input": "x"}).to_string(),
                "call_models",
            ),
            ("GET", "/v1/models".into(), String::new(), "call_models"),
            (
                "POST",
                "/api/v1/compare".into(),
                compare.clone(),
                "call_models",
            ),
            ("GET", "/api/v1/keys".into(), String::new(), "read"),
            (
                "GET",
                format!("/api/v1/keys/{victim}"),
                String::new(),
                "read",
            ),
            ("GET", "/api/v1/logs".into(), String::new(), "read"),
            ("GET", "/api/v1/providers".into(), String::new(), "read"),
            ("GET", "/api/v1/models".into(), String::new(), "read"),
            (
                "GET",
                "/api/v1/analytics/summary".into(),
                String::new(),
                "read",
            ),
            (
                "GET",
                "/api/v1/analytics/timeseries".into(),
                String::new(),
                "read",
            ),
            (
                "GET",
                "/api/v1/analytics/breakdown?by=model".into(),
                String::new(),
                "read",
            ),
            ("GET", "/api/v1/errors".into(), String::new(), "read"),
            ("GET", "/api/v1/errors/stats".into(), String::new(), "read"),
            ("GET", "/api/v1/server-logs".into(), String::new(), "read"),
            ("GET", "/api/v1/events".into(), String::new(), "read"),
            ("GET", "/api/v1/audit".into(), String::new(), "read_audit"),
            (
                "POST",
                "/api/v1/errors/0123456789abcdef/reopen".into(),
                String::new(),
                "operate",
            ),
            (
                "POST",
                "/api/v1/keys".into(),
                r#"{"role": "viewer"}"#.into(),
                "manage_keys",
            ),
            (
                "PATCH",
                format!("/api/v1/keys/{victim}"),
                r#"{"name": "renamed"}"#.into(),
                "manage_keys",
            ),
            (
                "DELETE",
                format!("/api/v1/keys/{victim}"),
                String::new(),
                "manage_keys",
            ),
        ];
        for (method, path, body, permission) in endpoints {
            let allowed = match *role {
                "admin" | "operator" => true,
                "developer" => permission == "call_models",
                _ => permission == "read",
            };
            let response = client()
                .request(method.parse().unwrap(), format!("{base}{path}"))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            if allowed {
                // Past the permission check, a group that does not exist is a 404.
                let found_or_missing =
                    (200..300).contains(&status) || (permission == "operate" && status == 404);
                assert!(found_or_missing, "{role} {method} {path}: {status}");
            } else {
                assert_eq!(status, 403, "{role} {method} {path}");
                let answer: Value = response.json().await.unwrap();
                assert_eq!(
                    answer["error"]["code"], "permission_denied",
                    "{role} {method} {path}"
                );
                assert!(
                    answer["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains(permission),
                    "{role} {method} {path}: {answer}"
                );
            }
        }
    }
}
