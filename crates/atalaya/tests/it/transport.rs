//! The HTTP surface's own limits: CORS off by default and exact when configured, and a cap
//! on header size.

use crate::harness::*;

/// A chat request with the admin key from a browser at `origin`.
async fn from_origin(url: &str, origin: &str) -> reqwest::Response {
    client()
        .post(url)
        .bearer_auth(ADMIN_KEY)
        .header("origin", origin)
        .body(chat_body("sim-chat", false))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_is_off_by_default_and_answers_only_configured_origins() {
    let plain = serve(ServeOptions::default());
    let response = from_origin(
        &format!("{}/v1/chat/completions", plain.url()),
        "https://app.example.com",
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );

    let server = serve(ServeOptions {
        config: "[server]\ncors_origins = [\"https://app.example.com\"]\n",
        ..ServeOptions::default()
    });
    let url = format!("{}/v1/chat/completions", server.url());
    // A browser's preflight: answered without a key.
    let preflight = client()
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    // The call itself exposes the headers a client reads.
    let response = from_origin(&url, "https://app.example.com").await;
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        response.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    // Another origin gets nothing to go on.
    let response = from_origin(&url, "https://evil.example.net").await;
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let server = serve(ServeOptions {
        config: "[server]\nmax_header_bytes = 4096\n",
        ..ServeOptions::default()
    });
    let response = client()
        .post(format!("{}/v1/chat/completions", server.url()))
        .bearer_auth(ADMIN_KEY)
        .header("x-padding", "a".repeat(5000))
        .body(chat_body("sim-chat", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_headers_too_large");
    assert!(response_ok(&server).await);
}

async fn response_ok(server: &Server) -> bool {
    let (status, _, _) = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &chat_body("sim-chat", false),
    )
    .await;
    status == 200
}

/// A test CA and a certificate for 127.0.0.1 signed by it (with the `openssl` command):
/// (CA certificate, server certificate, server key).
fn test_certificates(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let path = |name: &str| dir.join(name);
    std::fs::write(
        path("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: Vec<Vec<String>> = vec![
        [
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=atalaya test CA", "-keyout"],
        ]
        .concat()
        .into_iter()
        .map(str::to_owned)
        .chain([
            path("ca.key").display().to_string(),
            "-out".into(),
            path("ca.pem").display().to_string(),
        ])
        .collect(),
        [&["req"][..], &ec, &["-subj", "/CN=127.0.0.1", "-keyout"]]
            .concat()
            .into_iter()
            .map(str::to_owned)
            .chain([
                path("key.pem").display().to_string(),
                "-out".into(),
                path("leaf.csr").display().to_string(),
            ])
            .collect(),
        ["x509", "-req", "-days", "2", "-CAcreateserial", "-in"]
            .into_iter()
            .map(str::to_owned)
            .chain([
                path("leaf.csr").display().to_string(),
                "-CA".into(),
                path("ca.pem").display().to_string(),
                "-CAkey".into(),
                path("ca.key").display().to_string(),
                "-extfile".into(),
                path("leaf.ext").display().to_string(),
                "-out".into(),
                path("cert.pem").display().to_string(),
            ])
            .collect(),
    ];
    for args in steps {
        let status = std::process::Command::new("openssl")
            .args(&args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command makes the test certificates");
        assert!(status.success(), "openssl {args:?}");
    }
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

#[tokio::test]
async fn tls_serves_https_with_the_configured_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(certs.path());
    let server = serve(ServeOptions {
        config: &format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        ..ServeOptions::default()
    });
    assert!(server.process.output().contains("Listening on https://"));
    let root = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .unwrap();
    let url = format!("https://{}/v1/chat/completions", server.process.address);
    let response = https
        .post(&url)
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(chat_body("sim-chat", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Plain HTTP on the TLS port gets nowhere.
    assert!(
        client()
            .post(format!(
                "http://{}/v1/chat/completions",
                server.process.address
            ))
            .send()
            .await
            .is_err()
    );
    // The audit log still learns the client's address over TLS.
    let response = https
        .get(format!("https://{}/api/v1/keys", server.process.address))
        .bearer_auth("sk-atl-wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let audit = eventually(std::time::Duration::from_secs(5), || async {
        let response = https
            .get(format!("https://{}/api/v1/audit", server.process.address))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        let page: serde_json::Value = response.json().await.unwrap();
        (!page["data"].as_array().unwrap().is_empty()).then_some(page)
    })
    .await;
    assert_eq!(audit["data"][0]["source_ip"], "127.0.0.1");
}

/// An HTTPS upstream that offers HTTP/2 by ALPN (another gateway serving TLS, answering from
/// its simulator), trusted through `SSL_CERT_FILE`: plain and streamed answers come through,
/// and a burst shares the connection.
#[tokio::test]
async fn an_https_upstream_is_reached_over_tls_with_http2_by_alpn() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(certs.path());
    let upstream = serve(ServeOptions {
        config: &format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        ..ServeOptions::default()
    });
    let server = serve(ServeOptions {
        config: &format!(
            "[[providers]]\nname = \"tls\"\ntype = \"openai-compatible\"\nbase_url = \"https://{}/v1\"\napi_key = \"{ADMIN_KEY}\"\nmodels = [\"sim-chat\"]\n",
            upstream.process.address
        ),
        env: vec![
            ("SSL_CERT_FILE", ca.display().to_string()),
            (
                "RUST_LOG",
                "info,atalaya_gateway::http_client=debug".to_owned(),
            ),
        ],
        ..ServeOptions::default()
    });
    let url = format!("{}/v1/chat/completions", server.url());
    let (status, _, body) = post(&url, ADMIN_KEY, &chat_body("tls/sim-chat", false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion", "{body}");
    send_many_ok(
        &server,
        "/v1/chat/completions",
        &chat_body("tls/sim-chat", true),
        20,
        10,
    )
    .await;
    // The upstream gateway answered all 21.
    let root = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .unwrap();
    let logs = format!("https://{}/api/v1/logs?limit=100", upstream.process.address);
    let rows = eventually(std::time::Duration::from_secs(5), || async {
        let response = https
            .get(&logs)
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        let page: serde_json::Value = response.json().await.unwrap();
        let rows = page["data"].as_array().cloned().unwrap_or_default();
        (rows.len() == 21).then_some(rows)
    })
    .await;
    assert!(rows.iter().all(|row| row["status"] == 200), "{rows:?}");
    // One HTTP/2 connection carried them all — one per worker, each worker having its own
    // pool: a burst waits for the first connection rather than opening one each.
    let output = server.process.output();
    let workers: usize = output
        .split("workers=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap();
    let opened: Vec<_> = output
        .lines()
        .filter(|line| line.contains("Opened an upstream connection"))
        .collect();
    assert!(
        !opened.is_empty() && opened.len() <= workers,
        "{workers} workers: {output}"
    );
    assert!(
        opened.iter().all(|line| line.contains("HTTP/2")),
        "{output}"
    );
}

#[test]
fn a_half_tls_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("atalaya.toml");
    std::fs::write(&config, "[server]\ntls_cert = \"/nonexistent.pem\"\n").unwrap();
    let output = std::process::Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("server.tls_key"));
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_with_a_strict_policy() {
    let server = serve(ServeOptions::default());
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects
        .get(format!("{}/ui", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/ui/");
    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let response = client()
            .get(format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("default-src 'self'") && policy.contains("connect-src 'self'"));
        assert!(
            !response.text().await.unwrap().contains("https://"),
            "{path} loads nothing from elsewhere"
        );
    }
}

#[tokio::test]
async fn one_port_speaks_http1_and_h2c_and_tells_them_apart_however_the_bytes_arrive() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = serve(ServeOptions::default());
    let url = format!("{}/v1/chat/completions", server.url());

    // HTTP/2 with prior knowledge: a streamed answer over h2c.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .post(&url)
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(chat_body("sim-chat", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("data: [DONE]"));

    // HTTP/1.1 whose first byte arrives alone: "P" could begin HTTP/2's preface, so the
    // server waits for more before choosing.
    let body = chat_body("sim-chat", false);
    let request = format!(
        "OST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(&server.process.address)
        .await
        .unwrap();
    tcp.write_all(b"P").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("chat.completion"), "{answer}");

    // The audit log still learns each caller's address over either protocol.
    let created = h2
        .post(format!("{}/api/v1/keys", server.url()))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"name": "over-h2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let (_, audit) = get(&format!("{}/api/v1/audit", server.url()), ADMIN_KEY).await;
    assert_eq!(audit["data"][0]["source_ip"], "127.0.0.1", "{audit}");
}
