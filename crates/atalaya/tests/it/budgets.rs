//! Budgets: spend per key and team at catalog prices; a soft limit alerts, a hard limit
//! blocks with 429 budget_exceeded, the spend survives a restart and shows on the key.

use serde_json::{Value, json};

use crate::harness::*;

/// `gpt-4o-mini` through an `openai`-type provider, so requests are priced.
fn config(upstream: &Process, extra: &str) -> String {
    format!(
        "[[providers]]\nname = \"priced\"\ntype = \"openai\"\nbase_url = \"{}/v1\"\napi_key = \"sk-upstream-secret\"\n\n{extra}",
        upstream.url()
    )
}

async fn key(server: &Server, body: Value) -> (String, String) {
    let created = create_key(server, body).await;
    (
        created["key"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    )
}

fn ask() -> String {
    chat_body("gpt-4o-mini", false)
}

#[tokio::test]
async fn a_key_budget_alerts_then_blocks_and_survives_a_restart() {
    let upstream = mock(MockOptions::default());
    let server = serve(ServeOptions {
        config: &config(&upstream, ""),
        ..ServeOptions::default()
    });
    let url = format!("{}/v1/chat/completions", server.url());
    // One request costs ~$0.00002 at gpt-4o-mini's prices.
    let (status, _, answer) = post(&url, ADMIN_KEY, &ask()).await;
    assert_eq!(status, 200, "{answer}");
    let (limited, id) = key(
        &server,
        json!({"budget_usd": 0.00003, "soft_budget_usd": 0.00001, "budget_period": "day"}),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, headers, body) = post(&url, &limited, &ask()).await;
        statuses.push(status);
        if status == 429 {
            assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("key budget")
            );
            assert!(headers.contains_key("retry-after"));
        }
    }
    // The second request crosses the limit; the third is refused.
    assert_eq!(statuses, [200, 200, 429]);
    let (_, shown) = get(&format!("{}/api/v1/keys/{id}", server.url()), ADMIN_KEY).await;
    assert_eq!(shown["spend"]["period"], "day");
    assert!(
        shown["spend"]["spent_usd"].as_f64().unwrap() >= 0.00003,
        "{shown}"
    );
    assert_eq!(shown["spend"]["budget_usd"], 0.00003);
    // Alerts: a metric, and entries in the audit log.
    let audit = eventually(std::time::Duration::from_secs(5), || async {
        let (_, page) = get(&format!("{}/api/v1/audit", server.url()), ADMIN_KEY).await;
        let text = page.to_string();
        (text.contains("budget.soft_limit") && text.contains("budget.exceeded")).then_some(text)
    })
    .await;
    assert!(audit.contains(&format!("key:{id}")));
    assert!(metric(&server, "atalaya_budget_exceeded_total{scope=\"key\"}").await >= 1.0);

    // After a restart the spend is read back from the request log: still blocked.
    let Server {
        mut process,
        data_dir,
    } = server;
    process.terminate();
    let server = serve_in(
        ServeOptions {
            config: &config(&upstream, ""),
            ..ServeOptions::default()
        },
        data_dir,
    );
    let (status, _, body) = post(
        &format!("{}/v1/chat/completions", server.url()),
        &limited,
        &ask(),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    // Raising the budget lets it through at once.
    let response = client()
        .patch(format!("{}/api/v1/keys/{id}", server.url()))
        .bearer_auth(ADMIN_KEY)
        .body(json!({"budget_usd": 1.0}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _, _) = post(
        &format!("{}/v1/chat/completions", server.url()),
        &limited,
        &ask(),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_team_budget_is_shared_by_its_keys() {
    let upstream = mock(MockOptions::default());
    let server = serve(ServeOptions {
        config: &config(
            &upstream,
            "[[teams]]\nname = \"blue\"\nbudget_usd = 0.00003\n",
        ),
        ..ServeOptions::default()
    });
    let url = format!("{}/v1/chat/completions", server.url());
    let (first, _) = key(&server, json!({"team": "blue"})).await;
    let (second, _) = key(&server, json!({"team": "blue"})).await;
    for _ in 0..2 {
        let (status, _, _) = post(&url, &first, &ask()).await;
        assert_eq!(status, 200);
    }
    let (status, _, body) = post(&url, &second, &ask()).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team budget"),
        "{body}"
    );
    // Bad budgets name the field.
    let (status, _, body) = post(
        &format!("{}/api/v1/keys", server.url()),
        ADMIN_KEY,
        &json!({"budget_period": "week"}).to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "budget_period");
}
