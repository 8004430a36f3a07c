use tracing_subscriber::layer::SubscriberExt as _;

use super::*;

fn settings() -> OtlpSettings {
    OtlpSettings {
        endpoint: "http://127.0.0.1:9/v1/traces".to_owned(),
        headers: Vec::new(),
        service_name: "atalaya-test".to_owned(),
        sample_ratio: 1.0,
        queue_spans: 64,
        batch_spans: 16,
        flush_interval: Duration::from_millis(50),
        timeout: Duration::from_secs(1),
    }
}

/// Runs `body` under a subscriber with only the OTLP layer and returns the spans it finished.
fn record(body: impl FnOnce()) -> Vec<OtelSpan> {
    let (layer, mut exporter) = OtlpLayer::new(settings());
    let subscriber = tracing_subscriber::registry()
        .with(layer.with_filter(tracing_subscriber::filter::filter_fn(OtlpLayer::wants)));
    tracing::subscriber::with_default(subscriber, body);
    let mut spans = Vec::new();
    while let Ok(span) = exporter.spans.try_recv() {
        spans.push(span);
    }
    spans
}

fn attr<'a>(span: &'a OtelSpan, key: &str) -> Option<&'a Attr> {
    span.attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[test]
fn a_request_joins_the_callers_trace_and_its_children_nest_under_it() {
    let spans = record(|| {
        let request = tracing::info_span!(
            "request",
            trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
            parent_span_id = "00f067aa0ba902b7",
            sampled = true,
            otel.kind = "server",
            path = "/v1/chat/completions",
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        request.in_scope(|| {
            let attempt = tracing::debug_span!("attempt", model = "gpt-4o-mini", attempt = 1u64);
            attempt.in_scope(|| {
                let upstream = tracing::debug_span!(
                    "upstream",
                    span_id = %SpanId(0xabcdef0123456789),
                    otel.kind = "client",
                );
                upstream.in_scope(|| tracing::warn!(retry_in_ms = 20u64, "Upstream slow."));
            });
        });
        request.record("http.response.status_code", 502u64);
        request.record("otel.status_code", "error");
    });
    assert_eq!(spans.len(), 3, "children close first: {spans:?}");
    let (upstream, attempt, request) = (&spans[0], &spans[1], &spans[2]);
    for span in &spans {
        assert_eq!(span.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert!(span.end_ns >= span.start_ns && span.start_ns > 0);
    }
    assert_eq!(request.name, "request");
    assert_eq!(request.parent_id, 0x00f067aa0ba902b7, "the caller's span");
    assert_eq!(request.kind, 2);
    assert_eq!(request.status, Status::Error);
    assert_eq!(
        attr(request, "http.response.status_code"),
        Some(&Attr::Int(502))
    );
    assert_eq!(
        attr(request, "path"),
        Some(&Attr::Str("/v1/chat/completions".to_owned()))
    );
    assert!(
        attr(request, "trace_id").is_none(),
        "steering fields are not attributes"
    );
    assert_eq!(attempt.parent_id, request.span_id);
    assert_eq!(attempt.kind, 1);
    assert_eq!(attr(attempt, "attempt"), Some(&Attr::Int(1)));
    assert_eq!(upstream.parent_id, attempt.span_id);
    assert_eq!(upstream.span_id, 0xabcdef0123456789, "the id sent upstream");
    assert_eq!(upstream.kind, 3);
    assert_eq!(upstream.events.len(), 1);
    assert_eq!(upstream.events[0].name, "Upstream slow.");
    assert_eq!(upstream.status, Status::Unset, "a warning is not a failure");

    let json = request.to_json();
    assert_eq!(json["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(json["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(json["kind"], 2);
    assert_eq!(json["status"]["code"], 2);
    assert!(
        json["startTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    let code = json["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "http.response.status_code")
        .unwrap();
    assert_eq!(code["value"]["intValue"], "502");
}

#[test]
fn an_error_inside_a_span_marks_it_failed_and_unsampled_traces_export_nothing() {
    let spans = record(|| {
        tracing::info_span!("request").in_scope(|| tracing::error!("Store down."));
        tracing::info_span!(
            "request",
            trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
            sampled = false
        )
        .in_scope(|| {
            tracing::debug_span!("attempt").in_scope(|| tracing::error!("Not exported."));
        });
    });
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].status, Status::Error);
    assert_eq!(spans[0].status_message.as_deref(), Some("Store down."));
    assert_ne!(spans[0].trace_id, 0, "a root without a trace id starts one");
    assert_eq!(spans[0].parent_id, 0);
}

#[test]
fn only_our_spans_and_warnings_reach_the_layer() {
    let spans = record(|| {
        tracing::trace_span!("too_fine").in_scope(|| {});
        tracing::info_span!(target: "hyper::client", "foreign").in_scope(|| {});
        tracing::info_span!("ours").in_scope(|| tracing::info!("Not an event worth exporting."));
    });
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "ours");
    assert!(spans[0].events.is_empty());
}

#[test]
fn sampling_by_ratio_follows_the_trace_id() {
    assert!(sampled_at(1.0, 12345));
    assert!(!sampled_at(0.0, 12345));
    let kept = (0..10_000u128)
        .filter(|i| sampled_at(0.25, i.wrapping_mul(0x9e3779b97f4a7c15f39cc0605cedc835)))
        .count();
    assert!((2_000..3_000).contains(&kept), "{kept} of 10000 at 25 %");
    let id = 0x4bf92f3577b34da6a3ce929d0e0e4736;
    assert_eq!(sampled_at(0.5, id), sampled_at(0.5, id));
}

#[test]
fn an_export_request_carries_the_resource_and_every_span() {
    let spans = record(|| {
        tracing::info_span!("one").in_scope(|| {});
        tracing::info_span!("two").in_scope(|| {});
    });
    let body: Value = serde_json::from_slice(&encode(&settings(), &spans)).unwrap();
    let resource = &body["resourceSpans"][0];
    assert_eq!(
        resource["resource"]["attributes"][0],
        json!({"key": "service.name", "value": {"stringValue": "atalaya-test"}})
    );
    let names: Vec<&str> = resource["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "two"]);
}

#[test]
fn endpoints_get_the_traces_path_once() {
    assert_eq!(
        OtlpSettings::traces_url("http://127.0.0.1:4318"),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(
        OtlpSettings::traces_url("http://127.0.0.1:4318/v1/traces/"),
        "http://127.0.0.1:4318/v1/traces"
    );
}
