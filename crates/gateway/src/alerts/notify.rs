//! Sending alerts: webhooks (JSON), Slack-format webhooks and email over SMTP, each in a task
//! of its own with a few retries, so a slow receiver never holds up evaluation.

use std::time::Duration;

use atalaya_telemetry::names;
use secrecy::ExposeSecret as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use super::{AlertChannel, ChannelKind, Notice};

const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct Notifier {
    http: reqwest::Client,
}

impl Notifier {
    pub(super) fn new() -> Notifier {
        Notifier {
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }

    pub(super) fn send(&self, channel: AlertChannel, notice: Notice) {
        let http = self.http.clone();
        tokio::spawn(async move {
            let mut last_error = String::new();
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
                match deliver(&http, &channel.kind, &notice).await {
                    Ok(()) => {
                        metrics::counter!(names::ALERT_NOTIFICATIONS, "channel" => channel.name.clone(), "outcome" => "sent").increment(1);
                        return;
                    }
                    Err(error) => last_error = error,
                }
            }
            metrics::counter!(names::ALERT_NOTIFICATIONS, "channel" => channel.name.clone(), "outcome" => "failed").increment(1);
            tracing::warn!(channel = %channel.name, rule = %notice.rule, error = %last_error, "An alert could not be sent.");
        });
    }
}

async fn deliver(
    http: &reqwest::Client,
    kind: &ChannelKind,
    notice: &Notice,
) -> Result<(), String> {
    match kind {
        ChannelKind::Webhook { url, headers } => {
            let body = serde_json::json!({"source": "atalaya", "alert": notice});
            let mut request = json_post(http, url, &body);
            for (name, value) in headers {
                request = request.header(name.as_str(), value.expose_secret());
            }
            check(request.send().await).await
        }
        ChannelKind::Slack { url } => {
            let body = slack_body(notice);
            check(json_post(http, url, &body).send().await).await
        }
        ChannelKind::Email {
            host,
            port,
            from,
            to,
        } => {
            let message = email(from, to, notice);
            tokio::time::timeout(TIMEOUT, smtp_send(host, *port, from, to, &message))
                .await
                .map_err(|_| "the SMTP server did not answer in time".to_owned())?
        }
    }
}

fn json_post(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> reqwest::RequestBuilder {
    http.post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
}

async fn check(result: Result<reqwest::Response, reqwest::Error>) -> Result<(), String> {
    let response = result.map_err(|error| crate::providers::error_chain(&error))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {}", response.status()))
    }
}

fn headline(notice: &Notice) -> String {
    format!(
        "[{} {}] {}: {}",
        notice.state.to_uppercase(),
        notice.severity.as_str(),
        notice.rule,
        notice.summary
    )
}

/// Slack's incoming-webhook message: a text line and a coloured attachment with the facts.
pub(super) fn slack_body(notice: &Notice) -> serde_json::Value {
    let color = match (notice.state, notice.severity) {
        ("resolved", _) => "#2eb886",
        (_, super::AlertSeverity::Critical) => "#d40e0d",
        (_, super::AlertSeverity::Warning) => "#daa038",
        _ => "#439fe0",
    };
    serde_json::json!({
        "text": headline(notice),
        "attachments": [{
            "color": color,
            "fields": [
                {"title": "Rule", "value": notice.rule, "short": true},
                {"title": "Severity", "value": notice.severity.as_str(), "short": true},
                {"title": "Subject", "value": notice.subject, "short": true},
                {"title": "State", "value": notice.state, "short": true},
            ],
            "ts": notice.time_ms / 1_000,
        }],
    })
}

/// One line of a header, with anything that could start another header removed.
fn header_safe(text: &str) -> String {
    text.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

/// An RFC 5322 message, lines ending in CRLF.
pub(super) fn email(from: &str, to: &[String], notice: &Notice) -> String {
    let date = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + Duration::from_millis(notice.time_ms.max(0) as u64),
    )
    .replace("GMT", "+0000");
    let subject = header_safe(&format!("[atalaya] {}", headline(notice)));
    let details = serde_json::to_string_pretty(&notice.details).unwrap_or_default();
    let body = format!(
        "{}\n\nRule: {}\nKind: {}\nSeverity: {}\nSubject: {}\nState: {}\n\n{details}\n",
        notice.summary,
        notice.rule,
        notice.kind,
        notice.severity.as_str(),
        notice.subject,
        notice.state
    );
    let mut message = format!(
        "From: {}\r\nTo: {}\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{}.{}@atalaya>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        header_safe(from),
        header_safe(&to.join(", ")),
        notice.time_ms,
        uuid::Uuid::now_v7().simple(),
    );
    for line in body.lines() {
        message.push_str(line);
        message.push_str("\r\n");
    }
    message
}

/// Sends `message` over plain SMTP: EHLO, MAIL FROM, RCPT TO for each recipient, DATA (with
/// dot-stuffing), QUIT. Every reply code is checked.
pub(super) async fn smtp_send(
    host: &str,
    port: u16,
    from: &str,
    to: &[String],
    message: &str,
) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|error| format!("connecting to {host}:{port}: {error}"))?;
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    reply(&mut reader, &[220]).await?;
    command(&mut writer, &mut reader, "EHLO atalaya", &[250]).await?;
    command(
        &mut writer,
        &mut reader,
        &format!("MAIL FROM:<{}>", header_safe(from)),
        &[250],
    )
    .await?;
    for recipient in to {
        command(
            &mut writer,
            &mut reader,
            &format!("RCPT TO:<{}>", header_safe(recipient)),
            &[250, 251],
        )
        .await?;
    }
    command(&mut writer, &mut reader, "DATA", &[354]).await?;
    let mut data = String::with_capacity(message.len() + 8);
    for line in message.split_inclusive("\r\n") {
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
    }
    data.push_str(".\r\n");
    writer
        .write_all(data.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    reply(&mut reader, &[250]).await?;
    command(&mut writer, &mut reader, "QUIT", &[221]).await?;
    Ok(())
}

async fn command<R, W>(
    writer: &mut W,
    reader: &mut R,
    line: &str,
    expected: &[u16],
) -> Result<(), String>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    writer
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    reply(reader, expected)
        .await
        .map_err(|error| format!("{}: {error}", line.split(' ').next().unwrap_or(line)))
}

/// Reads a (possibly multi-line) reply and checks its code.
async fn reply<R>(reader: &mut R, expected: &[u16]) -> Result<(), String>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    loop {
        let mut line = String::new();
        let read = reader
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("the SMTP server closed the connection".to_owned());
        }
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        if line.as_bytes().get(3) == Some(&b'-') {
            continue;
        }
        return if expected.contains(&code) {
            Ok(())
        } else {
            Err(format!("the SMTP server answered `{}`", line.trim_end()))
        };
    }
}
