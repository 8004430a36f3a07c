//! What the client commands (`keys`, `compare`) share: finding a key and reading the
//! server's answers.

use std::path::Path;

use anyhow::Context as _;
use secrecy::SecretString;
use serde_json::Value;

/// `explicit`, else `$ATALAYA_ADMIN_KEY`, else `<data_dir>/admin.key`.
pub fn key(explicit: Option<&str>, data_dir: &Path) -> anyhow::Result<SecretString> {
    if let Some(key) = explicit {
        return Ok(SecretString::from(key.to_owned()));
    }
    if let Ok(key) = std::env::var("ATALAYA_ADMIN_KEY")
        && !key.trim().is_empty()
    {
        return Ok(SecretString::from(key.trim().to_owned()));
    }
    let path = data_dir.join("admin.key");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading the admin key from {} (set ATALAYA_ADMIN_KEY or pass a key)",
            path.display()
        )
    })?;
    Ok(SecretString::from(text.trim().to_owned()))
}

/// Sends `request`; the JSON body of a success, or the server's error message.
pub async fn answer(request: reqwest::RequestBuilder, base: &str) -> anyhow::Result<Value> {
    let response = request.send().await.with_context(|| {
        format!("connecting to {base} (is `atalaya serve` running? set --server)")
    })?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .context("reading the server's answer")?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        anyhow::bail!("the server answered {status}: {message}");
    }
    Ok(body)
}
