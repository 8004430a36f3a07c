//! The vault end to end: `atalaya secrets` seals a provider key, the config refers to it as
//! `vault:NAME`, the server uses it, the database never holds it, the master key rotates, and
//! a wrong master key stops the server with a clear message.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::*;

const PROVIDER_KEY: &str = "sk-upstream-secret";

/// `atalaya secrets ARGS --data-dir DIR`, with `stdin` as input and `env` added.
fn secrets(
    data: &Path,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut command = Command::new(binary());
    command
        .arg("secrets")
        .args(args)
        .arg("--data-dir")
        .arg(data);
    for (name, _) in std::env::vars() {
        if name.starts_with("ATALAYA_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir(data.parent().unwrap())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn config(upstream: &Process) -> String {
    format!(
        "[[providers]]\nname = \"upstream\"\ntype = \"openai-compatible\"\nbase_url = \"{}/v1\"\napi_key = \"vault:upstream-key\"\nmodels = [\"gpt-4o-mini\"]\n",
        upstream.url()
    )
}

async fn chat_works(server: &Server) {
    let (status, _, body) = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &chat_body("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn secrets_are_sealed_used_rotated_and_never_stored_in_plaintext() {
    let upstream = mock(MockOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();

    let (ok, _, err) = secrets(
        &data,
        &["set", "upstream-key"],
        &format!("{PROVIDER_KEY}\n"),
        &[],
    );
    assert!(ok, "{err}");
    let key_file = data.join("master.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (ok, listed, _) = secrets(&data, &["list", "--json"], "", &[]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["name"], "upstream-key");
    assert!(!listed.to_string().contains(PROVIDER_KEY));

    // The server resolves `vault:upstream-key` and the upstream accepts it.
    let server = serve_in(
        ServeOptions {
            config: &config(&upstream),
            ..ServeOptions::default()
        },
        dir,
    );
    chat_works(&server).await;
    for file in ["atalaya.db", "atalaya.db-wal"] {
        assert!(
            !file_holds(&server.data_path().join(file), PROVIDER_KEY),
            "{file}"
        );
    }
    assert!(!server.process.output().contains(PROVIDER_KEY));

    // Rotation re-wraps under a new master key; the server still opens the vault.
    let Server {
        mut process,
        data_dir,
    } = server;
    process.terminate();
    let before = std::fs::read_to_string(&key_file).unwrap();
    let (ok, _, err) = secrets(&data, &["rotate-master-key"], "", &[]);
    assert!(ok && err.contains("1 secret(s) re-wrapped"), "{err}");
    assert_ne!(std::fs::read_to_string(&key_file).unwrap(), before);
    assert!(!data.join("master.key.new").exists());
    let (_, listed, _) = secrets(&data, &["list", "--json"], "", &[]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let server = serve_in(
        ServeOptions {
            config: &config(&upstream),
            ..ServeOptions::default()
        },
        data_dir,
    );
    chat_works(&server).await;
    assert!(
        server
            .process
            .output()
            .contains(listed[0]["master_key_id"].as_str().unwrap())
    );
    let Server {
        mut process,
        data_dir,
    } = server;
    process.terminate();

    // A wrong master key is a clear start-up error, not garbage.
    let output = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .current_dir(data_dir.path())
        .env("ATALAYA_MASTER_KEY", "not-the-right-key")
        .env("ATALAYA_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("was sealed under master key"), "{stderr}");

    // Deleted: a reference to it stops the server, naming the secret.
    let (ok, _, _) = secrets(&data, &["delete", "upstream-key"], "", &[]);
    assert!(ok);
    std::fs::write(data_dir.path().join("atalaya.toml"), config(&upstream)).unwrap();
    let output = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(data_dir.path().join("atalaya.toml"))
        .arg("--data-dir")
        .arg(&data)
        .current_dir(data_dir.path())
        .env("ATALAYA_ADMIN_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the vault has no secret `upstream-key`"),
        "{stderr}"
    );

    // Every step is in the audit log, and the chain holds.
    let output = Command::new(binary())
        .args(["audit", "export", "--data-dir"])
        .arg(&data)
        .current_dir(data_dir.path())
        .output()
        .unwrap();
    let exported = String::from_utf8_lossy(&output.stdout);
    for action in ["secret.set", "secret.read", "vault.rotate", "secret.delete"] {
        assert!(
            exported.contains(&format!("\"action\":\"{action}\"")),
            "{action}: {exported}"
        );
    }
    assert!(!exported.contains(PROVIDER_KEY));
    let output = Command::new(binary())
        .args(["audit", "verify", "--data-dir"])
        .arg(&data)
        .current_dir(data_dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn an_interrupted_rotation_is_finished_by_running_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for name in ["a", "b"] {
        let (ok, _, err) = secrets(&data, &["set", name], "value-of-a-secret", &[]);
        assert!(ok, "{err}");
    }
    // A rotation that wrote its new key and then died before re-wrapping anything.
    std::fs::write(data.join("master.key.new"), "the-pending-new-master-key\n").unwrap();
    let (ok, _, err) = secrets(&data, &["rotate-master-key"], "", &[]);
    assert!(ok, "{err}");
    assert!(err.contains("2 secret(s) re-wrapped"), "{err}");
    assert_eq!(
        std::fs::read_to_string(data.join("master.key"))
            .unwrap()
            .trim(),
        "the-pending-new-master-key"
    );
    // The secrets open under the new key (setting another checks the whole vault first).
    let (ok, _, err) = secrets(&data, &["set", "c"], "value", &[]);
    assert!(ok, "{err}");

    // With the key in the environment, the new one comes from ATALAYA_NEW_MASTER_KEY.
    let env_key = std::fs::read_to_string(data.join("master.key")).unwrap();
    let (ok, _, err) = secrets(
        &data,
        &["rotate-master-key"],
        "",
        &[("ATALAYA_MASTER_KEY", env_key.trim())],
    );
    assert!(!ok && err.contains("ATALAYA_NEW_MASTER_KEY"), "{err}");
    let (ok, _, err) = secrets(
        &data,
        &["rotate-master-key"],
        "",
        &[
            ("ATALAYA_MASTER_KEY", env_key.trim()),
            ("ATALAYA_NEW_MASTER_KEY", "env-new-key"),
        ],
    );
    assert!(ok && err.contains("3 secret(s) re-wrapped"), "{err}");
    let (ok, _, _) = secrets(
        &data,
        &["set", "d"],
        "value",
        &[("ATALAYA_MASTER_KEY", "env-new-key")],
    );
    assert!(ok);
}
