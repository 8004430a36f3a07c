use super::*;

fn deployment(name: &str, weight: u32, info: Option<ModelInfo>) -> Arc<Deployment> {
    Arc::new(Deployment {
        id: Arc::from(name),
        provider: Arc::from(name),
        upstream_model: Arc::from("m"),
        weight,
        info: info.map(Arc::new),
        health: Health::new(name, &RoutingSettings::default()),
    })
}

fn plan(strategy: Strategy, deployments: Vec<Arc<Deployment>>) -> Plan {
    Plan::new(
        "model",
        Arc::from("model"),
        strategy,
        deployments,
        Vec::new(),
        None,
        Timeouts::default(),
    )
}

fn round_robin_over_abc() -> Plan {
    plan(
        Strategy::RoundRobin,
        vec![
            deployment("a", 1, None),
            deployment("b", 1, None),
            deployment("c", 1, None),
        ],
    )
}

fn first(plan: &Plan, facts: &Facts) -> String {
    plan.order(facts).unwrap()[0].id.to_string()
}

fn info(input: f64, context: u64, features: Vec<Feature>) -> ModelInfo {
    ModelInfo {
        provider: "p".into(),
        model: "m".into(),
        context_window: Some(context),
        max_output: None,
        input_per_million: Some(input),
        output_per_million: Some(input * 4.0),
        cached_input_per_million: None,
        cache_write_per_million: None,
        features,
    }
}

#[test]
fn weighted_shares_are_exact_and_interleaved() {
    let plan = plan(
        Strategy::Weighted,
        vec![deployment("a", 3, None), deployment("b", 1, None)],
    );
    let picks: Vec<String> = (0..4000).map(|_| first(&plan, &Facts::default())).collect();
    assert_eq!(picks.iter().filter(|p| *p == "a").count(), 3000);
    // Smooth: never more than three of the same in a row.
    assert!(!picks.windows(4).any(|w| w.iter().all(|p| p == "a")));
    // The rest of the order is by weight, for retries.
    assert_eq!(plan.order(&Facts::default()).unwrap().len(), 2);
}

#[test]
fn round_robin_is_exact() {
    let plan = round_robin_over_abc();
    let picks: Vec<String> = (0..9).map(|_| first(&plan, &Facts::default())).collect();
    assert_eq!(picks, ["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
}

#[test]
fn least_connections_avoids_the_busy_one() {
    let plan = plan(
        Strategy::LeastConnections,
        vec![deployment("a", 1, None), deployment("b", 1, None)],
    );
    plan.deployments[0]
        .health
        .in_flight
        .store(5, Ordering::Relaxed);
    for _ in 0..10 {
        assert_eq!(first(&plan, &Facts::default()), "b");
    }
}

#[tokio::test(start_paused = true)]
async fn latency_prefers_the_fast_one_and_reacts_to_a_slowdown_at_once() {
    let plan = plan(
        Strategy::Latency,
        vec![deployment("fast", 1, None), deployment("slow", 1, None)],
    );
    for _ in 0..5 {
        plan.deployments[0]
            .health
            .observe(Duration::from_millis(10), true);
        plan.deployments[1]
            .health
            .observe(Duration::from_millis(200), true);
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    let fast = (0..100)
        .filter(|_| first(&plan, &Facts::default()) == "fast")
        .count();
    assert_eq!(
        fast, 100,
        "with two deployments the better of the two picks is always the faster"
    );
    // Peak EWMA: one slow answer makes the fast one look slow at once.
    plan.deployments[0]
        .health
        .observe(Duration::from_millis(900), true);
    assert_eq!(first(&plan, &Facts::default()), "slow");
}

#[test]
fn cost_picks_the_cheapest_that_fits() {
    let plan = plan(
        Strategy::Cost,
        vec![
            deployment("dear", 1, Some(info(10.0, 1_000_000, vec![Feature::Tools]))),
            deployment(
                "cheap",
                1,
                Some(info(0.1, 8_000, vec![Feature::StreamUsage])),
            ),
            deployment("unknown", 1, Some(info(5.0, 8_000, vec![]))),
        ],
    );
    assert_eq!(first(&plan, &Facts::default()), "cheap");
    let long = Facts {
        prompt_tokens: 50_000,
        ..Facts::default()
    };
    assert_eq!(
        first(&plan, &long),
        "dear",
        "the cheap one's window is too small"
    );
    let tools = Facts {
        tools: true,
        ..Facts::default()
    };
    let order: Vec<String> = plan
        .order(&tools)
        .unwrap()
        .iter()
        .map(|d| d.id.to_string())
        .collect();
    assert_eq!(
        order,
        ["unknown", "dear"],
        "the cheap one lacks tools; unknown features count as capable"
    );
    let too_long = Facts {
        prompt_tokens: 2_000_000,
        ..Facts::default()
    };
    assert_eq!(plan.order(&too_long).unwrap_err(), Unfit::TooLong);
}

#[test]
fn priority_keeps_the_order_and_open_breakers_go_last() {
    let plan = plan(
        Strategy::Priority,
        vec![deployment("a", 1, None), deployment("b", 1, None)],
    );
    assert_eq!(first(&plan, &Facts::default()), "a");
    let breaker = &plan.deployments[0].health.breaker;
    for _ in 0..10 {
        breaker.acquire().unwrap().failure();
    }
    assert_eq!(first(&plan, &Facts::default()), "b");
}

#[tokio::test(start_paused = true)]
async fn adaptive_favours_success_but_keeps_exploring() {
    let plan = plan(
        Strategy::Adaptive,
        vec![deployment("good", 1, None), deployment("bad", 1, None)],
    );
    for _ in 0..20 {
        plan.deployments[0]
            .health
            .observe(Duration::from_millis(50), true);
        plan.deployments[1]
            .health
            .observe(Duration::from_millis(50), false);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    // Figures one second old: nothing to explore yet.
    let good = (0..1000)
        .filter(|_| first(&plan, &Facts::default()) == "good")
        .count();
    assert_eq!(good, 1000);
    // Stale figures: exactly one request goes to refresh them, however many arrive.
    tokio::time::advance(EXPLORE_EVERY).await;
    let bad = (0..1000)
        .filter(|_| first(&plan, &Facts::default()) == "bad")
        .count();
    assert_eq!(bad, 1);
}

#[tokio::test(start_paused = true)]
async fn adaptive_gives_a_recovered_deployment_its_traffic_back() {
    let plan = plan(
        Strategy::Adaptive,
        vec![deployment("a", 1, None), deployment("b", 1, None)],
    );
    // b fails for a minute, then recovers; both answer in 50 ms when they answer.
    let mut b_share_last_10s = 0;
    for second in 0..180 {
        for _ in 0..50 {
            let chosen = plan.order(&Facts::default()).unwrap()[0].clone();
            let ok = chosen.id.as_ref() == "a" || second >= 60;
            chosen.health.observe(Duration::from_millis(50), ok);
            if second >= 170 && chosen.id.as_ref() == "b" {
                b_share_last_10s += 1;
            }
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert!(
        b_share_last_10s >= 100,
        "b got {b_share_last_10s} of the last 500 requests"
    );
}

#[test]
fn key_rings_rotate_and_skip_refused_keys() {
    let ring = KeyRing::new(
        "p",
        vec![
            SecretString::from("k0"),
            SecretString::from("k1"),
            SecretString::from("k2"),
        ],
    );
    let picked: Vec<usize> = (0..6).map(|_| ring.pick().unwrap().0).collect();
    assert_eq!(picked, [0, 1, 2, 0, 1, 2]);
    ring.disable(1);
    let picked: Vec<usize> = (0..4).map(|_| ring.pick().unwrap().0).collect();
    assert!(!picked.contains(&1));
    ring.disable(0);
    ring.disable(2);
    assert!(ring.pick().is_none());
    assert_eq!((ring.enabled(), ring.total()), (0, 3));
}

#[test]
fn an_open_breakers_share_goes_to_all_the_others() {
    let plan = round_robin_over_abc();
    // Trip b's breaker (default: 10 calls, half of them failed).
    for _ in 0..10 {
        plan.deployments[1]
            .health
            .breaker
            .acquire()
            .unwrap()
            .failure();
    }
    assert!(!plan.deployments[1].health.breaker.is_permitted());
    let orders: Vec<Vec<String>> = (0..100)
        .map(|_| {
            plan.order(&Facts::default())
                .unwrap()
                .iter()
                .map(|d| d.id.to_string())
                .collect()
        })
        .collect();
    let firsts = |name: &str| orders.iter().filter(|o| o[0] == name).count();
    assert_eq!((firsts("a"), firsts("b"), firsts("c")), (50, 0, 50));
    // Still offered, last, in case the others fail too.
    assert!(orders.iter().all(|o| o.len() == 3 && o[2] == "b"));
}
