//! Configuration reload: SIGHUP and `POST /api/v1/config/reload` apply a new file to new
//! requests while running ones finish; an invalid file changes nothing.

use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::harness::{
    ADMIN_KEY, MockOptions, ServeOptions, Server, chat_body, client, create_key, eventually, get,
    gpt_on, metrics_text, mock, post, serve, set_profile,
};

fn config_path(server: &Server) -> std::path::PathBuf {
    server.data_dir.path().join("atalaya.toml")
}

fn model_ids(models: &Value) -> Vec<String> {
    models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn reload_outcome(server: &Server) -> Value {
    let (status, last) = get(&format!("{}/api/v1/config/reload", server.url()), ADMIN_KEY).await;
    assert_eq!(status, 200, "{last}");
    last["last"].clone()
}

#[tokio::test]
async fn a_new_file_serves_new_requests_and_running_streams_finish_on_the_old_one() {
    // Slow streams: one is still running when the reload lands.
    let upstream = mock(MockOptions {
        tokens_per_second: 20.0,
        ..MockOptions::default()
    });
    let first = format!(
        "{}\n[[models]]\nname = \"old-name\"\ndeployments = [{{ provider = \"p0\", model = \"gpt-4o-mini\" }}]\n",
        gpt_on(&upstream)
    );
    let server = serve(ServeOptions {
        config: &first,
        ..ServeOptions::default()
    });
    let base = server.url();
    let (_, models) = get(&format!("{base}/v1/models"), ADMIN_KEY).await;
    assert!(model_ids(&models).contains(&"old-name".to_owned()));

    let running = client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(chat_body("old-name", true))
        .send()
        .await
        .unwrap();
    assert_eq!(running.status(), 200);
    let mut running = running.bytes_stream();
    let first_chunk = running.next().await.unwrap().unwrap();
    assert!(first_chunk.starts_with(b"data: "));

    // The model is renamed and a request-log writer setting changed (that one needs a restart).
    let second = format!(
        "{}\n[[models]]\nname = \"new-name\"\ndeployments = [{{ provider = \"p0\", model = \"gpt-4o-mini\" }}]\n\n[request_log]\nbatch_size = 77\n",
        gpt_on(&upstream)
    );
    std::fs::write(config_path(&server), second).unwrap();
    let pid = server.process.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let outcome = eventually(Duration::from_secs(10), || async {
        let last = reload_outcome(&server).await;
        last.is_object().then_some(last)
    })
    .await;
    assert_eq!(outcome["reloaded"], true, "{outcome}");
    assert_eq!(outcome["generation"], 2);
    assert_eq!(outcome["requested_by"], "signal");
    assert_eq!(outcome["changed"], json!(["models"]), "{outcome}");
    assert_eq!(
        outcome["restart_needed"],
        json!(["request_log"]),
        "{outcome}"
    );

    // New requests see the new file.
    let (_, models) = get(&format!("{base}/v1/models"), ADMIN_KEY).await;
    let ids = model_ids(&models);
    assert!(ids.contains(&"new-name".to_owned()), "{ids:?}");
    assert!(!ids.contains(&"old-name".to_owned()), "{ids:?}");
    let url = format!("{base}/v1/chat/completions");
    let (status, _, body) = post(&url, ADMIN_KEY, &chat_body("new-name", false)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = post(&url, ADMIN_KEY, &chat_body("old-name", false)).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found");

    // The stream that started before the reload finishes whole.
    let mut rest = first_chunk.to_vec();
    while let Some(chunk) = running.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");

    let metrics = metrics_text(&server).await;
    assert!(
        metrics.contains("atalaya_config_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("atalaya_config_generation 2"), "{metrics}");
}

#[tokio::test]
async fn an_invalid_file_is_refused_and_the_running_configuration_kept() {
    let upstream = mock(MockOptions::default());
    let good = gpt_on(&upstream);
    let server = serve(ServeOptions {
        config: &good,
        ..ServeOptions::default()
    });
    let base = server.url();
    let reload = format!("{base}/api/v1/config/reload");
    let chat = format!("{base}/v1/chat/completions");

    // A key only an operator or admin may use to reload.
    let viewer = create_key(&server, json!({"name": "v", "role": "viewer"})).await;
    let viewer = viewer["key"].as_str().unwrap();
    let (status, _, body) = post(&reload, viewer, "").await;
    assert_eq!(status, 403, "{body}");

    let broken = [
        // Not TOML.
        "[[providers]\nname = ",
        // A wrong type.
        "[server]\nlisten = 4000\n",
        // Valid TOML, but a model on a provider nobody configured.
        "[[models]]\nname = \"x\"\ndeployments = [{ provider = \"nobody\", model = \"m\" }]\n",
    ];
    for (index, text) in broken.iter().enumerate() {
        std::fs::write(
            server.data_dir.path().join("atalaya.toml"),
            format!("{good}\n{text}"),
        )
        .unwrap();
        let (status, _, body) = post(&reload, ADMIN_KEY, "").await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "invalid_config", "{body}");
        assert_eq!(body["reload"]["reloaded"], false, "{body}");
        assert_eq!(body["reload"]["generation"], 1, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("running one is kept"), "{message}");
        if index > 0 {
            // A validation error names the key; the parse error names the file.
            assert!(
                message.contains("listen") || message.contains("nobody"),
                "{message}"
            );
        } else {
            assert!(message.contains("atalaya.toml"), "{message}");
        }
        // Still serving the old configuration.
        let (status, _, body) = post(&chat, ADMIN_KEY, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(status, 200, "{body}");
    }

    // The same error through the CLI, with a non-zero exit.
    let output = Command::new(crate::harness::binary())
        .args(["reload", "--server", &base, "--key", ADMIN_KEY])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("422") && stderr.contains("nobody"),
        "{stderr}"
    );

    // A good file again: the CLI reloads it.
    std::fs::write(
        server.data_dir.path().join("atalaya.toml"),
        format!("{good}\n[[teams]]\nname = \"blue\"\nrpm_limit = 5\n"),
    )
    .unwrap();
    let output = Command::new(crate::harness::binary())
        .args(["reload", "--server", &base, "--key", ADMIN_KEY])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("generation 2") && stdout.contains("teams"),
        "{stdout}"
    );

    let metrics = metrics_text(&server).await;
    assert!(
        metrics.contains("atalaya_config_reloads_total{result=\"error\"} 4"),
        "{metrics}"
    );
    // Every attempt is audited, refused ones with their reason.
    let (_, audit) = get(&format!("{base}/api/v1/audit?limit=50"), ADMIN_KEY).await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "config.reload_failed")
            .count(),
        4,
        "{actions:?}"
    );
    assert_eq!(actions.iter().filter(|a| **a == "config.reload").count(), 1);
}

#[tokio::test]
async fn alert_rules_and_channels_added_by_a_reload_fire() {
    let upstream = mock(MockOptions::default());
    let hooks = crate::harness::HookReceiver::start().await;
    let base_config = format!(
        "{}[routing]\nmax_attempts = 1\n[alerts]\nevaluate_interval_ms = 200\n",
        gpt_on(&upstream)
    );
    let server = serve(ServeOptions {
        config: &base_config,
        ..ServeOptions::default()
    });
    std::fs::write(
        config_path(&server),
        format!(
            "{base_config}\n[[alerts.channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}/hook\"\n\n\
             [[alerts.rules]]\nname = \"upstream-errors\"\nkind = \"error_rate\"\nthreshold = 0.5\nwindow_seconds = 2\nmin_requests = 3\n",
            hooks.url
        ),
    )
    .unwrap();
    let (status, _, outcome) = post(
        &format!("{}/api/v1/config/reload", server.url()),
        ADMIN_KEY,
        "",
    )
    .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["changed"], json!(["alerts"]), "{outcome}");
    assert_eq!(outcome["restart_needed"], json!([]), "{outcome}");

    set_profile(&upstream, r#"{"name": "failing"}"#).await;
    let url = format!("{}/v1/chat/completions", server.url());
    for _ in 0..3 {
        post(&url, ADMIN_KEY, &chat_body("gpt-4o-mini", false)).await;
    }
    let alert = eventually(Duration::from_secs(10), || async {
        hooks.bodies("/hook").into_iter().next()
    })
    .await;
    assert_eq!(alert["alert"]["rule"], "upstream-errors", "{alert}");
    assert_eq!(alert["alert"]["state"], "firing");
}
