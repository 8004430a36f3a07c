//! Configuration reloads under traffic: an invalid file changes nothing, a valid one changes
//! routing without failing a request, streams that straddle the swap included.

use std::time::Duration;

use crate::harness::*;
use crate::*;

async fn last_reload(server: &Server) -> serde_json::Value {
    let (_, body) = get(&format!("{}/api/v1/config/reload", server.url()), ADMIN_KEY).await;
    body["last"].clone()
}

/// One more request to model `m`, which must be answered.
async fn answered(server: &Server) {
    let url = format!("{}/v1/chat/completions", server.url());
    let (status, _, body) = post(&url, ADMIN_KEY, &ask(false)).await;
    assert_eq!(status, 200, "{body}");
}

/// Reloads done so far, successful or not.
async fn reloads_done(server: &Server) -> f64 {
    metrics_text(server)
        .await
        .lines()
        .filter(|line| line.starts_with("atalaya_config_reloads_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Writes each file in turn and signals a reload after each, while `fire` runs; waits for
/// each reload to be done before the next file, since signals sent while one is running
/// are delivered as one (the file is read when the reload starts, so the last one still
/// takes effect, but the count would not match).
async fn reload_repeatedly(server: &Server, files: Vec<String>) {
    let path = server.data_dir.path().join("atalaya.toml");
    let pid = server.process.child.id().to_string();
    for text in files {
        let before = reloads_done(server).await;
        std::fs::write(&path, text).unwrap();
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        eventually(Duration::from_secs(10), || async {
            (reloads_done(server).await > before).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn reload_with_an_invalid_file() {
    let cluster = cluster("");
    let server = &cluster.server;
    let path = server.data_dir.path().join("atalaya.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    let broken = vec![
        format!("{good}\n[[models]\nname ="),
        format!("{good}\n[server]\nlisten = 4000\n"),
        good.replace("provider = \"p1\"", "provider = \"nobody\""),
        "[[providers]]\nname = \"p0\"\n".to_owned(),
    ];
    let attempts = broken.len();
    let n = scale();
    let streaming = ask(true);
    let (tally, ()) = tokio::join!(
        fire(server, "/v1/chat/completions", &streaming, n, true),
        reload_repeatedly(server, broken)
    );
    eventually(Duration::from_secs(10), || async {
        (metric(server, "atalaya_config_reloads_total").await >= attempts as f64).then_some(())
    })
    .await;
    let outcome = last_reload(server).await;
    assert_eq!(outcome["reloaded"], false, "{outcome}");
    assert_eq!(outcome["generation"], 1, "{outcome}");
    // Still the file from the start: `m` on p0 then p1.
    answered(server).await;
    all_served_and_logged(
        server,
        "config reload, invalid file",
        "4 invalid files (bad TOML, wrong type, unknown provider, missing fields), each with SIGHUP, under traffic",
        &tally,
        "every reload refused with its reason, the running configuration kept (generation 1)",
    )
    .await;
}

#[tokio::test]
async fn reload_under_traffic() {
    let cluster = cluster("");
    let server = &cluster.server;
    let path = server.data_dir.path().join("atalaya.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    // p1 first, then p0 first again, then p1 first: each a valid routing change.
    let p1_first = good
        .replace("provider = \"p0\"", "provider = \"swap\"")
        .replace("provider = \"p1\"", "provider = \"p0\"")
        .replace("provider = \"swap\"", "provider = \"p1\"");
    let files = vec![p1_first.clone(), good.clone(), p1_first];
    let n = scale();
    let streaming = ask(true);
    let (tally, ()) = tokio::join!(
        fire(server, "/v1/chat/completions", &streaming, n, true),
        reload_repeatedly(server, files)
    );
    eventually(Duration::from_secs(10), || async {
        (last_reload(server).await["generation"] == 4).then_some(())
    })
    .await;
    // New requests go to p1 now.
    let before = mock_requests(&cluster.mocks[1]).await;
    answered(server).await;
    assert_eq!(mock_requests(&cluster.mocks[1]).await, before + 1);
    all_served_and_logged(
        server,
        "config reload under traffic",
        "3 valid files swapping the deployment order, each with SIGHUP, while streams run",
        &tally,
        "no request failed or lost its row; new requests follow the last file (generation 4)",
    )
    .await;
}
