use super::*;

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn with_file(text: &str) -> (tempfile::TempDir, Flags) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atalaya.toml");
    std::fs::write(&path, text).unwrap();
    (
        dir,
        Flags {
            config: Some(path),
            ..Flags::default()
        },
    )
}

fn load_err(text: &str, env_pairs: &[(&str, &str)]) -> String {
    let (_dir, flags) = with_file(text);
    match load(&flags, &env(env_pairs)) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn defaults_run_the_simulator_on_loopback() {
    let (_dir, flags) = with_file("");
    let settings = load(&flags, &Env::new()).unwrap();
    assert_eq!(settings.listen.to_string(), "127.0.0.1:4000");
    assert_eq!(settings.data_dir, PathBuf::from("./atalaya-data"));
    assert_eq!(settings.database_url, "sqlite://./atalaya-data/atalaya.db");
    assert!(settings.gateway.sim.is_some());
    assert!(settings.gateway.providers.is_empty());
}

#[test]
fn openai_env_turns_the_preset_on_and_the_simulator_off() {
    let (_dir, flags) = with_file("");
    let settings = load(
        &flags,
        &env(&[
            ("OPENAI_API_KEY", "sk-test"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
        ]),
    )
    .unwrap();
    assert!(settings.gateway.sim.is_none());
    let provider = &settings.gateway.providers[0];
    assert_eq!(provider.name, "openai");
    assert_eq!(provider.base_url, "http://127.0.0.1:9/v1");
    assert!(provider.models.iter().any(|m| m == "gpt-4o-mini"));
    assert!(provider.source.contains("OPENAI_BASE_URL"));
}

#[test]
fn simulator_can_run_beside_real_providers() {
    let (_dir, flags) = with_file("[sim]\nenabled = true\n");
    let settings = load(&flags, &env(&[("OPENAI_API_KEY", "sk-test")])).unwrap();
    assert!(settings.gateway.sim.is_some());
    assert_eq!(settings.gateway.providers.len(), 1);
}

#[test]
fn env_overrides_beat_the_file_and_flags_beat_env() {
    let (_dir, mut flags) = with_file("[server]\nlisten = \"127.0.0.1:1\"\nmax_body_bytes = 10\n");
    let vars = env(&[
        ("ATALAYA_SERVER__LISTEN", "127.0.0.1:2"),
        ("ATALAYA_SERVER__MAX_BODY_BYTES", "20"),
    ]);
    let settings = load(&flags, &vars).unwrap();
    assert_eq!(settings.listen.port(), 2);
    assert_eq!(settings.gateway.max_body_bytes, 20);
    flags.listen = Some("127.0.0.1:3".to_owned());
    assert_eq!(load(&flags, &vars).unwrap().listen.port(), 3);
}

#[test]
fn env_can_fill_array_entries() {
    let (_dir, flags) = with_file(
        "[[providers]]\nname = \"local\"\ntype = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:1/v1\"\n",
    );
    let settings = load(
        &flags,
        &env(&[("ATALAYA_PROVIDERS__0__BASE_URL", "http://127.0.0.1:5/v1")]),
    )
    .unwrap();
    assert_eq!(
        settings.gateway.providers[0].base_url,
        "http://127.0.0.1:5/v1"
    );
}

#[test]
fn variables_are_interpolated() {
    let vars = env(&[("KEY", "secret"), ("EMPTY", "")]);
    assert_eq!(interpolate("a ${KEY} b", &vars).unwrap(), "a secret b");
    assert_eq!(interpolate("${MISSING:-dflt}", &vars).unwrap(), "dflt");
    assert_eq!(interpolate("${EMPTY:-dflt}", &vars).unwrap(), "dflt");
    assert_eq!(interpolate("$${KEY} $5", &vars).unwrap(), "${KEY} $5");
    assert!(
        interpolate("${MISSING}", &vars)
            .unwrap_err()
            .contains("MISSING is not set")
    );
    assert!(interpolate("${KEY", &vars).is_err());
    assert!(interpolate("${bad name}", &vars).is_err());
}

#[test]
fn errors_name_the_key_and_the_source() {
    let message = load_err("[server]\nlisten = \"nowhere\"\n", &[]);
    assert!(message.contains("server.listen"), "{message}");
    assert!(message.contains("atalaya.toml"), "{message}");

    let message = load_err("[server]\nlisten = 4000\n", &[]);
    assert!(message.contains("server.listen"), "{message}");

    let message = load_err("[server]\nlistne = \"x\"\n", &[]);
    assert!(message.contains("listne"), "{message}");

    let message = load_err("", &[("ATALAYA_SERVER__LISTEN", "bad")]);
    assert!(message.contains("ATALAYA_SERVER__LISTEN"), "{message}");

    let message = load_err(
        "[[providers]]\nname = \"p\"\ntype = \"openai\"\napi_key = \"${NOPE}\"\n",
        &[],
    );
    assert!(
        message.contains("providers[0].api_key") && message.contains("NOPE"),
        "{message}"
    );

    let message = load_err("[[providers]]\nname = \"p\"\ntype = \"magic\"\n", &[]);
    assert!(message.contains("providers[0].type"), "{message}");

    let message = load_err(
        "[[models]]\nname = \"fast\"\nprovider = \"ghost\"\nmodel = \"m\"\n",
        &[],
    );
    assert!(message.contains("models[0].provider"), "{message}");

    let message = load_err("[database]\nurl = \"mysql://u:pw@h/db\"\n", &[]);
    assert!(
        message.contains("database.url") && !message.contains("pw"),
        "{message}"
    );

    let message = load_err("this is not toml", &[]);
    assert!(message.contains("not valid TOML"), "{message}");
}

#[test]
fn a_missing_explicit_file_is_an_error() {
    let flags = Flags {
        config: Some(PathBuf::from("/nonexistent/atalaya.toml")),
        ..Flags::default()
    };
    let message = load(&flags, &Env::new()).err().unwrap().to_string();
    assert!(message.contains("/nonexistent/atalaya.toml"), "{message}");
}

/// The keys serde accepts at `path`, read from its own unknown-field message.
fn accepted_keys(table_text: &str) -> Vec<String> {
    let table: toml::Table = toml::from_str(table_text).unwrap();
    let error = serde_path_to_error::deserialize::<_, RawConfig>(toml::Value::Table(table))
        .err()
        .unwrap();
    let message = error.inner().to_string();
    let first_line = message.lines().next().unwrap_or(&message);
    let list = first_line
        .split("expected one of ")
        .nth(1)
        .or_else(|| first_line.split("expected ").nth(1))
        .unwrap_or_else(|| panic!("{message}"));
    list.split(", ")
        .flat_map(|k| k.split(" or "))
        .map(|k| {
            k.trim_matches(|c: char| c == '`' || c.is_whitespace() || c == '\n')
                .to_owned()
        })
        .collect()
}

#[test]
fn the_example_file_loads_and_documents_every_key() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../atalaya.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let flags = Flags {
        config: Some(path),
        ..Flags::default()
    };
    let settings = load(&flags, &Env::new()).unwrap();
    assert_eq!(settings.gateway.providers[0].name, "local");

    let probes = [
        "__probe = 1",
        "[server]\n__probe = 1",
        "[database]\n__probe = 1",
        "[telemetry]\n__probe = 1",
        "[telemetry.otlp]\n__probe = 1",
        "[request_log]\n__probe = 1",
        "[analytics]\n__probe = 1",
        "[retention]\n__probe = 1",
        "[alerts]\n__probe = 1",
        "[health]\n__probe = 1",
        "[health.weights]\n__probe = 1",
        "[[alerts.rules]]\nname = \"x\"\nkind = \"budget\"\n__probe = 1",
        "[[alerts.channels]]\nname = \"x\"\ntype = \"slack\"\nurl = \"http://x\"\n__probe = 1",
        "[sim]\n__probe = 1",
        "[[providers]]\nname = \"x\"\ntype = \"openai\"\n__probe = 1",
        "[[models]]\nname = \"x\"\nprovider = \"p\"\nmodel = \"m\"\n__probe = 1",
        "[[providers]]\nname = \"x\"\ntype = \"openai\"\n[providers.quirks]\n__probe = 1",
        "[catalog]\n__probe = 1",
        "[routing]\n__probe = 1",
        "[routing.breaker]\n__probe = 1",
        "[[routing.rules]]\nroute_to = \"m\"\n__probe = 1",
        "[[models]]\nname = \"x\"\n[[models.deployments]]\nprovider = \"p\"\nmodel = \"m\"\n__probe = 1",
        "[[catalog.models]]\nprovider = \"p\"\nmodel = \"m\"\n__probe = 1",
    ];
    for probe in probes {
        for key in accepted_keys(probe) {
            let documented = text.lines().any(|line| {
                let line = line.trim_start();
                let table = line.trim_start_matches('[').trim_end_matches(']');
                line.starts_with(&format!("{key} ="))
                    || (line.starts_with('[')
                        && (table == key || table.ends_with(&format!(".{key}"))))
            });
            assert!(
                documented,
                "atalaya.example.toml does not document `{key}` (probe: {probe})"
            );
        }
    }
}

#[test]
fn retention_days_of_zero_keep_forever_and_bad_values_name_the_key() {
    let (_dir, flags) = with_file(
        "[retention]\nrequest_logs_days = 0\nrollups_days = 7\ninterval_minutes = 5\n[analytics]\nrollup_interval_ms = 250\n",
    );
    let settings = load(&flags, &Env::new()).unwrap();
    assert_eq!(settings.upkeep.retention.request_logs, None);
    assert_eq!(
        settings.upkeep.retention.rollups,
        Some(std::time::Duration::from_secs(7 * 86_400))
    );
    assert_eq!(settings.upkeep.retention_interval.as_secs(), 300);
    assert_eq!(settings.upkeep.rollup_interval.as_millis(), 250);
    for (text, key) in [
        (
            "[retention]\nrollups_days = 99999\n",
            "retention.rollups_days",
        ),
        (
            "[retention]\ninterval_minutes = 0\n",
            "retention.interval_minutes",
        ),
        (
            "[analytics]\nrollup_interval_ms = 0\n",
            "analytics.rollup_interval_ms",
        ),
        ("[retention]\nerrors = 3\n", "errors"),
    ] {
        let message = load_err(text, &[]);
        assert!(message.contains(key), "{text}: {message}");
    }
}

#[test]
fn span_export_follows_the_file_then_the_otel_variables() {
    let (_dir, flags) = with_file("");
    assert!(load(&flags, &Env::new()).unwrap().logs.otlp.is_none());
    let settings = load(
        &flags,
        &env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20tok"),
            ("OTEL_SERVICE_NAME", "edge-gw"),
        ]),
    )
    .unwrap();
    let otlp = settings.logs.otlp.unwrap();
    assert_eq!(otlp.endpoint, "http://127.0.0.1:4318/v1/traces");
    assert_eq!(
        otlp.headers,
        vec![("authorization".to_owned(), "Bearer tok".to_owned())]
    );
    assert_eq!(otlp.service_name, "edge-gw");
    assert_eq!(otlp.sample_ratio, 1.0);
    let (_dir, flags) = with_file(
        "[telemetry.otlp]\nendpoint = \"http://127.0.0.1:9999\"\nsample_ratio = 0.1\nservice_name = \"gw\"\n",
    );
    let otlp = load(
        &flags,
        &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]),
    )
    .unwrap()
    .logs
    .otlp
    .unwrap();
    assert_eq!(
        otlp.endpoint, "http://127.0.0.1:9999/v1/traces",
        "the file wins"
    );
    assert_eq!(otlp.sample_ratio, 0.1);
    let (_dir, flags) = with_file("");
    assert!(
        load(
            &flags,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_SDK_DISABLED", "true"),
            ]),
        )
        .unwrap()
        .logs
        .otlp
        .is_none()
    );
}

#[test]
fn span_export_rejects_what_it_cannot_do() {
    let grpc = load_err(
        "[telemetry.otlp]\nendpoint = \"http://127.0.0.1:4317\"\nprotocol = \"grpc\"\n",
        &[],
    );
    assert!(
        grpc.contains("telemetry.otlp.protocol") && grpc.contains("http/json"),
        "{grpc}"
    );
    let missing = load_err("[telemetry.otlp]\nenabled = true\n", &[]);
    assert!(missing.contains("telemetry.otlp.endpoint"), "{missing}");
    let ratio = load_err(
        "[telemetry.otlp]\nendpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 2.0\n",
        &[],
    );
    assert!(ratio.contains("sample_ratio"), "{ratio}");
    let bad = load_err("[telemetry.otlp]\nendpoint = \"not a url\"\n", &[]);
    assert!(bad.contains("not an http(s) URL"), "{bad}");
}

#[test]
fn health_settings_load_and_bad_ones_name_the_key() {
    let (_dir, flags) = with_file(
        "[health]\ninterval_ms = 250\nrecover_after_ms = 0\n[health.weights]\nproviders = 70\n[health.features]\ncompare = \"minimal\"\n",
    );
    let health = load(&flags, &Env::new()).unwrap().gateway.health;
    assert_eq!(health.interval.as_millis(), 250);
    assert!(health.recover_after.is_zero());
    assert_eq!(health.weights.providers, 70.0);
    assert_eq!(health.weights.database, 30.0);
    assert_eq!(
        health.feature_levels,
        vec![(
            "compare".to_owned(),
            atalaya_gateway::health::Level::Minimal
        )]
    );
    for (text, needle) in [
        (
            "[health.features]\ncaching = \"limited\"\n",
            "health.features.caching",
        ),
        (
            "[health.features]\ncompare = \"sometimes\"\n",
            "not a level",
        ),
        (
            "[health.weights]\ndatabase = -1\n",
            "health.weights.database",
        ),
        ("[health]\nhysteresis = 80\n", "health.hysteresis"),
        ("[health]\ninterval_ms = 0\n", "health.interval_ms"),
    ] {
        let message = load_err(text, &[]);
        assert!(message.contains(needle), "{text}: {message}");
    }
}
