//! The request log: a row per data-plane request, written off the request path, surviving a
//! locked database and a shutdown.

use std::time::Duration;

use sqlx::Connection as _;

use crate::harness::*;

#[tokio::test]
async fn every_request_gets_a_row_and_pages_are_stable() {
    let server = serve(ServeOptions::default());
    let chat = format!("{}/v1/chat/completions", server.url());
    send_chats(&server, 5).await;
    assert_eq!(
        post(&chat, ADMIN_KEY, &chat_body("nope", false)).await.0,
        404
    );
    assert_eq!(
        post(&chat, "sk-atl-wrong", &chat_body("sim-chat", false))
            .await
            .0,
        401
    );

    let rows = eventually(Duration::from_secs(5), || async {
        let rows = log_rows(&server).await;
        (rows.len() == 7).then_some(rows)
    })
    .await;
    // Newest first.
    assert_eq!(rows[0]["status"], 401);
    assert!(
        rows[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid_api_key")
    );
    assert_eq!(rows[1]["status"], 404);
    assert_eq!(rows[1]["model"], "nope");
    let ok = &rows[2];
    assert_eq!(ok["endpoint"], "chat_completions");
    assert_eq!(ok["provider"], "sim");
    assert!(ok["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(ok["created_at_ms"].as_i64().unwrap() > 1_700_000_000_000);

    let (_, page) = get(&format!("{}/api/v1/logs?limit=3", server.url()), ADMIN_KEY).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    let before = page["next_before"].as_i64().unwrap();
    let (_, next) = get(
        &format!("{}/api/v1/logs?limit=3&before={before}", server.url()),
        ADMIN_KEY,
    )
    .await;
    assert_eq!(next["data"][0]["seq"], rows[3]["seq"]);
    let (status, _) = get(
        &format!("{}/api/v1/logs?limit=abc", server.url()),
        ADMIN_KEY,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_locked_database_slows_nothing_and_loses_nothing() {
    // Small batches: rows queued while a write is stuck far outnumber one batch, and must wait
    // in the buffer rather than be dropped.
    let server = serve(ServeOptions {
        config: "[request_log]\nbatch_size = 4\nbuffer_rows = 1000\n",
        ..ServeOptions::default()
    });
    let chat = format!("{}/v1/chat/completions", server.url());
    assert_eq!(
        post(&chat, ADMIN_KEY, &chat_body("sim-chat", false))
            .await
            .0,
        200
    );
    eventually(Duration::from_secs(5), || async {
        (log_rows(&server).await.len() == 1).then_some(())
    })
    .await;

    // Another process takes the write lock and holds it past the writer's busy timeout (5 s).
    let blocker = lock_database(&server).await;
    let started = std::time::Instant::now();
    send_chats(&server, 20).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "requests waited on the database: {:?}",
        started.elapsed()
    );
    eventually(Duration::from_secs(15), || async {
        (metric(&server, "atalaya_request_log_write_errors_total").await >= 1.0).then_some(())
    })
    .await;
    assert!(metric(&server, "atalaya_request_log_rows_pending").await >= 20.0);
    // Storage that cannot take writes is not ready.
    let (status, body) = get(&format!("{}/health/ready", server.url()), "").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    unlock_database(blocker).await;
    let (status, _) = get(&format!("{}/health/ready", server.url()), "").await;
    assert_eq!(status, 200);

    eventually(Duration::from_secs(15), || async {
        (log_rows(&server).await.len() == 21).then_some(())
    })
    .await;
    assert_eq!(
        metric(&server, "atalaya_request_log_rows_dropped_total").await,
        0.0
    );
    assert!(server.process.output().contains("Request-log write failed"));
    assert!(
        server
            .process
            .output()
            .contains("Request-log storage is back")
    );
}

#[tokio::test]
async fn shutdown_writes_what_is_buffered() {
    let mut server = serve(ServeOptions {
        config: "[request_log]\nflush_interval_ms = 60000\nbatch_size = 1000\n",
        ..ServeOptions::default()
    });
    send_chats(&server, 12).await;
    // Nothing is flushed yet: the interval is a minute and the batch is not full.
    let status = server.process.terminate();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        server.process.output()
    );
    let url = format!("sqlite://{}", server.database().display());
    let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT COALESCE(SUM(rows), 0) FROM request_log_blocks")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(count, 12);
}

#[tokio::test]
async fn a_full_buffer_drops_rows_counts_them_and_keeps_the_rest() {
    let server = serve(ServeOptions {
        // Without a spill: rows the buffer cannot hold are dropped.
        config: "[request_log]\nbuffer_rows = 5\nbatch_size = 1\nflush_interval_ms = 50\nspill_dir = \"\"\n",
        ..ServeOptions::default()
    });
    let blocker = lock_database(&server).await;
    send_chats(&server, 30).await;
    let dropped = eventually(Duration::from_secs(15), || async {
        let dropped = metric(&server, "atalaya_request_log_rows_dropped_total").await;
        (dropped >= 20.0).then_some(dropped)
    })
    .await;
    unlock_database(blocker).await;
    let kept = 30 - dropped as usize;
    eventually(Duration::from_secs(15), || async {
        (log_rows(&server).await.len() == kept).then_some(())
    })
    .await;
    // Nothing further is lost or duplicated once storage is back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(log_rows(&server).await.len(), kept);
    assert_eq!(
        metric(&server, "atalaya_request_log_rows_dropped_total").await,
        dropped
    );
}

#[tokio::test]
async fn the_request_log_filters_by_status_model_key_time_and_request_id() {
    let server = serve(ServeOptions::default());
    let created = create_key(&server, serde_json::json!({"team": "red"})).await;
    let (key, id) = (
        created["key"].as_str().unwrap(),
        created["id"].as_str().unwrap(),
    );
    let url = format!("{}/v1/chat/completions", server.url());
    for _ in 0..2 {
        post(&url, key, &chat_body("sim-chat", false)).await;
    }
    post(&url, ADMIN_KEY, &chat_body("sim-chat", false)).await;
    post(&url, key, &chat_body("no-such-model", false)).await;
    eventually(std::time::Duration::from_secs(10), || async {
        (log_rows(&server).await.len() == 4).then_some(())
    })
    .await;
    let count = |query: &'static str| {
        let server = &server;
        async move {
            let (status, body) =
                get(&format!("{}/api/v1/logs?{query}", server.url()), ADMIN_KEY).await;
            assert_eq!(status, 200, "{query}: {body}");
            body["data"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("status=404").await, 1);
    assert_eq!(count("status=failed").await, 1);
    assert_eq!(count("status=200&model=sim-chat").await, 3);
    assert_eq!(count("team=red").await, 3);
    assert_eq!(count("from=1h").await, 4);
    assert_eq!(count("to=1h").await, 0);
    let rows = log_rows(&server).await;
    let request_id = rows[2]["request_id"].as_str().unwrap();
    let (_, body) = get(
        &format!("{}/api/v1/logs?request_id={request_id}", server.url()),
        ADMIN_KEY,
    )
    .await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["data"][0], rows[2]);
    let (_, body) = get(
        &format!("{}/api/v1/logs?key={id}&status=200", server.url()),
        ADMIN_KEY,
    )
    .await;
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    let (status, body) = get(
        &format!("{}/api/v1/logs?status=bad", server.url()),
        ADMIN_KEY,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "status");
}

#[tokio::test]
async fn the_request_log_can_be_switched_off() {
    let server = serve(ServeOptions {
        config: "[request_log]\nenabled = false\n",
        ..ServeOptions::default()
    });
    let url = format!("{}/v1/chat/completions", server.url());
    let (status, _, _) = post(&url, ADMIN_KEY, &chat_body("sim-chat", false)).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(log_rows(&server).await.is_empty());
    assert!(metric(&server, "atalaya_requests_total").await >= 1.0);
}
