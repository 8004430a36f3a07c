//! Starts the real binary (`serve`, `mock-provider`) on ephemeral ports and talks to it.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_atalaya")
}

/// A child process whose stderr is captured; killed on drop.
pub struct Process {
    pub child: Child,
    pub address: String,
    output: Arc<Mutex<String>>,
}

impl Process {
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `command` with inherited ATALAYA_*/OPENAI_* variables removed and `env` set,
/// and waits for its "Listening on http://ADDR." line.
fn start(mut command: Command, env: &[(&str, String)]) -> Process {
    for (name, _) in std::env::vars() {
        if name.starts_with("ATALAYA_") || name.starts_with("OPENAI_") || name == "RUST_LOG" {
            command.env_remove(&name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = command.spawn().expect("spawn atalaya");
    let stderr = child.stderr.take().unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    let (sender, receiver) = std::sync::mpsc::channel();
    let sink = output.clone();
    std::thread::spawn(move || {
        let mut sender = Some(sender);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // Into the output first: a caller woken by the address may read it at once.
            {
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
            const MARK: &str = "Listening on http";
            if let Some(at) = line.find(MARK)
                && let Some(sender) = sender.take()
            {
                // "Listening on http://127.0.0.1:PORT. address=..." (or https://)
                let rest = &line[at + MARK.len()..];
                let rest = rest.trim_start_matches('s').trim_start_matches("://");
                let address: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                let _ = sender.send(address.trim_end_matches('.').to_owned());
            }
        }
    });
    match receiver.recv_timeout(Duration::from_secs(60)) {
        Ok(address) => Process {
            child,
            address,
            output,
        },
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "process did not start listening; output:\n{}",
                output.lock().unwrap()
            );
        }
    }
}

pub struct MockOptions {
    pub latency_ms: u64,
    pub tokens_per_second: f64,
    pub api_key: Option<&'static str>,
    /// A fault profile name or file.
    pub profile: Option<&'static str>,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            latency_ms: 0,
            tokens_per_second: 0.0,
            api_key: Some("sk-upstream-secret"),
            profile: None,
        }
    }
}

pub fn mock(options: MockOptions) -> Process {
    let mut command = Command::new(binary());
    command.args(["mock-provider", "--listen", "127.0.0.1:0"]);
    command.args(["--latency-ms", &options.latency_ms.to_string()]);
    command.args([
        "--tokens-per-second",
        &options.tokens_per_second.to_string(),
    ]);
    if let Some(key) = options.api_key {
        command.args(["--api-key", key]);
    }
    if let Some(profile) = options.profile {
        command.args(["--profile", profile]);
    }
    start(command, &[])
}

/// A running `atalaya serve` with its own data directory.
pub struct Server {
    pub process: Process,
    pub data_dir: tempfile::TempDir,
}

pub struct ServeOptions<'a> {
    pub config: &'a str,
    pub env: Vec<(&'a str, String)>,
    pub admin_key: Option<&'a str>,
}

impl Default for ServeOptions<'_> {
    fn default() -> Self {
        ServeOptions {
            config: "",
            env: Vec::new(),
            admin_key: Some(ADMIN_KEY),
        }
    }
}

pub fn serve(options: ServeOptions<'_>) -> Server {
    let data_dir = tempfile::tempdir().unwrap();
    serve_in(options, data_dir)
}

pub fn serve_in(options: ServeOptions<'_>, data_dir: tempfile::TempDir) -> Server {
    let config_path = data_dir.path().join("atalaya.toml");
    std::fs::write(&config_path, options.config).unwrap();
    let mut command = Command::new(binary());
    command
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--config")
        .arg(&config_path);
    command.arg("--data-dir").arg(data_dir.path().join("data"));
    command.current_dir(data_dir.path());
    let mut env: Vec<(&str, String)> = options.env;
    if let Some(key) = options.admin_key {
        env.push(("ATALAYA_ADMIN_KEY", key.to_owned()));
    }
    if !env.iter().any(|(name, _)| *name == "RUST_LOG") {
        env.push(("RUST_LOG", "info".to_owned()));
    }
    Server {
        process: start(command, &env),
        data_dir,
    }
}

impl Server {
    pub fn url(&self) -> String {
        self.process.url()
    }

    pub fn data_path(&self) -> PathBuf {
        self.data_dir.path().join("data")
    }

    pub fn database(&self) -> PathBuf {
        self.data_path().join("atalaya.db")
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs JSON with the admin key; returns status, headers and body.
pub async fn post(url: &str, key: &str, body: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    post_with(url, key, body, &[]).await
}

pub async fn post_with(
    url: &str,
    key: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client()
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, value)
}

pub async fn get(url: &str, key: &str) -> (u16, Value) {
    let response = client().get(url).bearer_auth(key).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Polls `check` until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rows in the request log, read through the admin API.
pub async fn log_rows(server: &Server) -> Vec<Value> {
    let (status, body) = get(
        &format!("{}/api/v1/logs?limit=1000", server.url()),
        ADMIN_KEY,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().cloned().unwrap_or_default()
}

/// Takes the server database's write lock from another connection, as another process
/// would; the writer waits (up to its busy timeout, then fails) until `unlock_database`.
pub async fn lock_database(server: &Server) -> sqlx::SqliteConnection {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", server.database().display());
    let mut blocker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut blocker)
        .await
        .unwrap();
    blocker
}

pub async fn unlock_database(mut blocker: sqlx::SqliteConnection) {
    use sqlx::Connection as _;
    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
    blocker.close().await.unwrap();
}

pub fn chat_body(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "Say something about watchtowers."}],
    })
    .to_string()
}

pub fn config_with_openai_upstream(mock: &Process, extra: &str) -> String {
    format!(
        "[[providers]]\nname = \"upstream\"\ntype = \"openai-compatible\"\nbase_url = \"{}/v1\"\napi_key = \"${{UPSTREAM_KEY}}\"\nmodels = [\"gpt-4o-mini\", \"text-embedding-3-small\"]\nheaders = {{ \"x-team\" = \"blue\" }}\n{extra}",
        mock.url()
    )
}

pub fn read_file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub async fn metrics_text(server: &Server) -> String {
    client()
        .get(format!("{}/metrics", server.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// One unlabelled sample from `/metrics`, 0 when absent.
pub async fn metric(server: &Server, name: &str) -> f64 {
    metrics_text(server)
        .await
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// Sends `count` sim chat completions with the admin key; each must succeed.
pub async fn send_chats(server: &Server, count: usize) {
    let url = format!("{}/v1/chat/completions", server.url());
    for _ in 0..count {
        let (status, _, body) = post(&url, ADMIN_KEY, &chat_body("sim-chat", false)).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Requests a simulator has received, from `GET /_mock/stats`.
pub async fn mock_requests(mock: &Process) -> u64 {
    let (_, stats) = get(&format!("{}/_mock/stats", mock.url()), "").await;
    stats["requests"].as_u64().unwrap_or(0)
}

/// Replaces a simulator's fault profile (`PUT /_mock/profile`).
pub async fn set_profile(mock: &Process, profile: &str) {
    let response = client()
        .put(format!("{}/_mock/profile", mock.url()))
        .body(profile.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204, "{}", response.text().await.unwrap());
}

/// One `[[providers]]` entry per simulator, named `p0`, `p1`, ... (key `sk-upstream-secret`).
pub fn providers_for(mocks: &[&Process]) -> String {
    mocks
        .iter()
        .enumerate()
        .map(|(index, mock)| {
            format!(
                "[[providers]]\nname = \"p{index}\"\ntype = \"openai-compatible\"\nbase_url = \"{}/v1\"\napi_key = \"sk-upstream-secret\"\nmodels = []\n\n",
                mock.url()
            )
        })
        .collect()
}

/// One provider `p0` on `mock` serving `gpt-4o-mini` (deployment `p0/gpt-4o-mini`).
pub fn gpt_on(mock: &Process) -> String {
    providers_for(&[mock]).replace("models = []", "models = [\"gpt-4o-mini\"]")
}

/// Sends `count` copies of `body` to `path`, `concurrency` at a time; returns the statuses
/// and how long each took.
/// [`send_many`], asserting that every request got a 200.
pub async fn send_many_ok(
    server: &Server,
    path: &str,
    body: &str,
    count: usize,
    concurrency: usize,
) {
    let statuses = send_many(server, path, body, count, concurrency).await;
    assert!(
        statuses.iter().all(|(status, _)| *status == 200),
        "{statuses:?}"
    );
}

pub async fn send_many(
    server: &Server,
    path: &str,
    body: &str,
    count: usize,
    concurrency: usize,
) -> Vec<(u16, std::time::Duration)> {
    use futures_util::StreamExt as _;
    let client = client();
    let url = format!("{}{path}", server.url());
    futures_util::stream::iter(0..count)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            let body = body.to_owned();
            async move {
                let started = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(ADMIN_KEY)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                (status, started.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Whether the file at `path` holds `needle` anywhere (a missing file holds nothing).
pub fn file_holds(path: &Path, needle: &str) -> bool {
    std::fs::read(path)
        .unwrap_or_default()
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Creates a virtual key with the admin key; the API's answer (with `key` and `id`).
pub async fn create_key(server: &Server, body: serde_json::Value) -> Value {
    let (status, _, created) = post(
        &format!("{}/api/v1/keys", server.url()),
        ADMIN_KEY,
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created
}

/// A local HTTP receiver for webhooks: records every POST (path, headers, JSON body).
/// Requests a hook receiver took: path, headers and JSON body.
type Received = Arc<Mutex<Vec<(String, reqwest::header::HeaderMap, Value)>>>;

pub struct HookReceiver {
    pub url: String,
    pub received: Received,
    _task: tokio::task::JoinHandle<()>,
}

impl HookReceiver {
    pub async fn start() -> HookReceiver {
        let received: Arc<Mutex<Vec<(String, reqwest::header::HeaderMap, Value)>>> = Arc::default();
        let sink = received.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let sink = sink.clone();
            async move {
                let path = request.uri().path().to_owned();
                let headers = request.headers().clone();
                let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                    .await
                    .unwrap_or_default();
                let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                sink.lock().unwrap().push((path, headers, value));
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HookReceiver {
            url,
            received,
            _task: task,
        }
    }

    pub fn bodies(&self, path: &str) -> Vec<Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, _, body)| body.clone())
            .collect()
    }
}

/// Messages an SMTP sink took: recipients and text.
type Mailbox = Arc<Mutex<Vec<(Vec<String>, String)>>>;

/// A local SMTP sink: answers like a relay and records each message's envelope and text.
pub struct SmtpSink {
    pub port: u16,
    pub messages: Mailbox,
    _task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages: Mailbox = Arc::default();
        let sink = messages.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let (reader, mut writer) = stream.into_split();
                    let mut lines = tokio::io::BufReader::new(reader).lines();
                    let _ = writer.write_all(b"220 sink ESMTP\r\n").await;
                    let mut recipients = Vec::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let upper = line.to_ascii_uppercase();
                        let answer: &[u8] = if upper.starts_with("EHLO") {
                            b"250-sink\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("RCPT TO:") {
                            recipients.push(line[8..].trim_matches(['<', '>', ' ']).to_owned());
                            b"250 ok\r\n"
                        } else if upper == "DATA" {
                            let _ = writer.write_all(b"354 go on\r\n").await;
                            let mut text = String::new();
                            while let Ok(Some(data)) = lines.next_line().await {
                                if data == "." {
                                    break;
                                }
                                text.push_str(data.strip_prefix('.').unwrap_or(&data));
                                text.push('\n');
                            }
                            sink.lock()
                                .unwrap()
                                .push((std::mem::take(&mut recipients), text));
                            b"250 queued\r\n"
                        } else if upper == "QUIT" {
                            let _ = writer.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"250 ok\r\n"
                        };
                        let _ = writer.write_all(answer).await;
                    }
                });
            }
        });
        SmtpSink {
            port,
            messages,
            _task: task,
        }
    }

    pub fn messages(&self) -> Vec<(Vec<String>, String)> {
        self.messages.lock().unwrap().clone()
    }
}
