//! `[telemetry.otlp]`: span export to an OpenTelemetry collector. The standard `OTEL_*`
//! variables fill in what the file leaves unset, so an existing OpenTelemetry setup works as
//! it is.

use std::time::Duration;

use atalaya_telemetry::otlp::OtlpSettings;
use serde::Deserialize;

use super::{ConfigError, Env, Origins, error, positive, positive_ms};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOtlp {
    enabled: Option<bool>,
    endpoint: Option<String>,
    protocol: Option<String>,
    headers: std::collections::BTreeMap<String, String>,
    service_name: Option<String>,
    sample_ratio: Option<f64>,
    queue_spans: Option<u64>,
    batch_spans: Option<u64>,
    flush_interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
}

/// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,key2=value2`, values percent-encoded.
fn parse_env_headers(text: &str) -> Option<Vec<(String, String)>> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let value = percent_decode(value.trim())?;
            Some((key.trim().to_owned(), value))
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(super) fn settings(
    raw: RawOtlp,
    env: &Env,
    origins: &Origins,
) -> Result<Option<OtlpSettings>, ConfigError> {
    let var = |name: &str| env.get(name).filter(|v| !v.trim().is_empty());
    // The traces endpoint is used as it is; the generic one gets `/v1/traces` appended.
    let endpoint = match (&raw.endpoint, var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
        (Some(endpoint), _) => Some(OtlpSettings::traces_url(endpoint)),
        (None, Some(traces)) => Some(traces.clone()),
        (None, None) => var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| OtlpSettings::traces_url(e)),
    };
    let disabled_by_env = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let enabled = raw
        .enabled
        .unwrap_or(endpoint.is_some() && !disabled_by_env);
    if !enabled {
        return Ok(None);
    }
    let Some(endpoint) = endpoint else {
        return Err(error(
            "telemetry.otlp.endpoint",
            origins,
            "is needed to export spans (e.g. \"http://127.0.0.1:4318\")",
        ));
    };
    match url::Url::parse(&endpoint) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        _ => {
            return Err(error(
                "telemetry.otlp.endpoint",
                origins,
                format!("`{endpoint}` is not an http(s) URL"),
            ));
        }
    }
    let protocol = raw
        .protocol
        .clone()
        .or_else(|| var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").cloned())
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL").cloned())
        .unwrap_or_else(|| "http/json".to_owned());
    if protocol != "http/json" {
        return Err(error(
            "telemetry.otlp.protocol",
            origins,
            format!(
                "`{protocol}` is not supported: spans are exported as OTLP/HTTP JSON (\"http/json\"), which collectors accept on their HTTP port (4318)"
            ),
        ));
    }
    let mut headers: Vec<(String, String)> = match var("OTEL_EXPORTER_OTLP_HEADERS") {
        Some(text) if raw.headers.is_empty() => parse_env_headers(text).ok_or_else(|| {
            error(
                "telemetry.otlp.headers",
                origins,
                "OTEL_EXPORTER_OTLP_HEADERS is not a list of key=value pairs",
            )
        })?,
        _ => Vec::new(),
    };
    headers.extend(raw.headers);
    for (name, value) in &headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(value).is_err()
        {
            return Err(error(
                format!("telemetry.otlp.headers.{name}"),
                origins,
                "is not a valid HTTP header",
            ));
        }
    }
    let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(error(
            "telemetry.otlp.sample_ratio",
            origins,
            "must be between 0.0 and 1.0",
        ));
    }
    Ok(Some(OtlpSettings {
        endpoint,
        headers,
        service_name: raw
            .service_name
            .or_else(|| var("OTEL_SERVICE_NAME").cloned())
            .unwrap_or_else(|| "atalaya".to_owned()),
        sample_ratio,
        queue_spans: positive(
            raw.queue_spans,
            8_192,
            "telemetry.otlp.queue_spans",
            origins,
        )? as usize,
        batch_spans: positive(raw.batch_spans, 512, "telemetry.otlp.batch_spans", origins)?
            as usize,
        flush_interval: positive_ms(
            raw.flush_interval_ms,
            Duration::from_millis(1_000),
            "telemetry.otlp.flush_interval_ms",
            origins,
        )?,
        timeout: positive_ms(
            raw.timeout_ms,
            Duration::from_millis(10_000),
            "telemetry.otlp.timeout_ms",
            origins,
        )?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_headers_are_pairs_with_percent_encoded_values() {
        assert_eq!(
            parse_env_headers("api-key=abc%3D%3D, x-team = ops").unwrap(),
            vec![
                ("api-key".to_owned(), "abc==".to_owned()),
                ("x-team".to_owned(), "ops".to_owned())
            ]
        );
        assert!(parse_env_headers("no-equals").is_none());
        assert!(parse_env_headers("k=%zz").is_none());
    }
}
