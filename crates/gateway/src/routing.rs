//! Which deployment serves a request: models and their deployments, the strategies that
//! order them, routing rules, and the health each deployment carries (circuit breaker,
//! in-flight count, latency and success averages).
//!
//! Built once and shared by every HTTP worker, so breakers, counters and averages see all
//! traffic. Providers' HTTP clients stay per worker (`providers.rs`); this module only names
//! them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atalaya_resilience::{CircuitBreaker, RetryBudget};
use atalaya_telemetry::names;
use http::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::time::Instant;

use crate::catalog::{Catalog, Feature, ModelInfo};
use crate::config::{
    GatewayConfig, ProviderSettings, RouteRule, RoutingSettings, Strategy, Timeouts,
};
use crate::providers::{SIM_CHAT_MODEL, SIM_EMBED_MODEL, SIM_PROVIDER};

/// The health of one deployment, shared by every route to it.
#[derive(Debug)]
pub(crate) struct Health {
    pub breaker: Arc<CircuitBreaker>,
    pub in_flight: AtomicU32,
    latency: Mutex<PeakEwma>,
    /// Share of recent calls that succeeded (1 = all).
    success: Mutex<Ewma>,
    /// The two averages' current values (`f64` bits), read by every routing decision
    /// without taking the locks their updates need.
    latency_now: AtomicU64,
    success_now: AtomicU64,
    /// When the adaptive strategy last sent a request here to refresh stale figures.
    explored: Mutex<Option<Instant>>,
}

impl Health {
    fn new(id: &str, routing: &RoutingSettings) -> Arc<Health> {
        Arc::new(Health {
            breaker: CircuitBreaker::new(id, routing.breaker.clone()),
            in_flight: AtomicU32::new(0),
            latency: Mutex::new(PeakEwma::default()),
            success: Mutex::new(Ewma {
                value: 1.0,
                stamp: None,
            }),
            latency_now: AtomicU64::new(0f64.to_bits()),
            success_now: AtomicU64::new(1f64.to_bits()),
            explored: Mutex::new(None),
        })
    }

    /// Whether this deployment's figures are stale (nothing observed for `EXPLORE_EVERY`) and
    /// nobody has been sent to refresh them since; claims the exploration if so.
    fn claim_exploration(&self, now: Instant) -> bool {
        let stale = |stamp: Option<Instant>| {
            stamp.is_none_or(|at| now.saturating_duration_since(at) >= EXPLORE_EVERY)
        };
        let observed = self.success.lock().map(|s| s.stamp).unwrap_or(None);
        if !stale(observed) {
            return false;
        }
        let Ok(mut explored) = self.explored.lock() else {
            return false;
        };
        if !stale(*explored) {
            return false;
        }
        *explored = Some(now);
        true
    }

    /// Peak-EWMA latency times the load: what the `latency` strategy minimises.
    pub fn latency_cost(&self) -> f64 {
        self.latency() * f64::from(self.in_flight.load(Ordering::Relaxed) + 1)
    }

    /// Peak-EWMA latency in seconds, regardless of load.
    pub fn latency(&self) -> f64 {
        f64::from_bits(self.latency_now.load(Ordering::Relaxed))
    }

    pub fn success_rate(&self) -> f64 {
        f64::from_bits(self.success_now.load(Ordering::Relaxed))
    }

    pub fn observe(&self, latency: Duration, succeeded: bool) {
        let now = Instant::now();
        if succeeded && let Ok(mut ewma) = self.latency.lock() {
            ewma.observe(latency.as_secs_f64(), now);
            self.latency_now
                .store(ewma.value().to_bits(), Ordering::Relaxed);
        }
        if let Ok(mut ewma) = self.success.lock() {
            ewma.observe(if succeeded { 1.0 } else { 0.0 }, now);
            self.success_now
                .store(ewma.value.to_bits(), Ordering::Relaxed);
        }
    }
}

/// How often the adaptive strategy sends one request to a deployment it has stopped using,
/// so one that recovered is noticed. Bounded in time, not a share of traffic: at high load a
/// share would pour many requests into a deployment that is still slow.
const EXPLORE_EVERY: Duration = Duration::from_secs(2);

/// How long an adaptive ranking is reused: fresh enough to follow a deployment that slows
/// down or starts failing (breakers act on every call regardless).
const RANK_EVERY: Duration = Duration::from_millis(50);

/// How often the adaptive strategy looks for deployments due for exploration.
const EXPLORE_SCAN: Duration = Duration::from_millis(100);

/// Adaptive scores this close to the best count as a tie.
const ADAPTIVE_TIE: f64 = 0.05;

/// Time constant of the averages: a sample's weight halves in about 7 s.
const DECAY: f64 = 10.0;

/// An exponentially weighted average that decays with time, not with sample count.
#[derive(Debug)]
struct Ewma {
    value: f64,
    stamp: Option<Instant>,
}

impl Ewma {
    fn observe(&mut self, sample: f64, now: Instant) {
        let weight = match self.stamp {
            Some(stamp) => (-now.duration_since(stamp).as_secs_f64() / DECAY).exp(),
            None => 0.0,
        };
        self.value = self.value * weight + sample * (1.0 - weight);
        self.stamp = Some(now);
    }
}

/// Finagle's peak-EWMA: a slower sample replaces the average at once, faster ones blend in,
/// so a deployment that slows down loses traffic immediately and wins it back gradually.
#[derive(Debug, Default)]
struct PeakEwma {
    ewma: Option<Ewma>,
}

impl PeakEwma {
    fn observe(&mut self, seconds: f64, now: Instant) {
        match &mut self.ewma {
            Some(ewma) if seconds > ewma.value => {
                ewma.value = seconds;
                ewma.stamp = Some(now);
            }
            Some(ewma) => ewma.observe(seconds, now),
            None => {
                self.ewma = Some(Ewma {
                    value: seconds,
                    stamp: Some(now),
                })
            }
        }
    }

    /// Seconds; an unmeasured deployment looks fast so it gets tried.
    fn value(&self) -> f64 {
        self.ewma.as_ref().map_or(0.0, |e| e.value)
    }
}

/// One provider's upstream model, as a routing target.
#[derive(Debug)]
pub(crate) struct Deployment {
    /// `provider/model`: the breaker's name, the log's `deployment`.
    pub id: Arc<str>,
    pub provider: Arc<str>,
    pub upstream_model: Arc<str>,
    pub weight: u32,
    pub info: Option<Arc<ModelInfo>>,
    pub health: Arc<Health>,
}

impl Deployment {
    /// What `request` would cost here at catalog prices; unknown prices sort last.
    fn estimated_cost(&self, facts: &Facts) -> f64 {
        match &self.info {
            Some(info) => {
                let input = info.input_per_million.unwrap_or(f64::MAX / 4.0);
                let output = info.output_per_million.unwrap_or(0.0);
                input * facts.prompt_tokens as f64
                    + output * f64::from(facts.max_tokens.unwrap_or(256))
            }
            None => f64::MAX / 2.0,
        }
    }

    /// Whether the request fits: its prompt in the context window, its needs in the
    /// features. Unknown models are given the benefit of the doubt.
    fn fits(&self, facts: &Facts) -> Fit {
        let Some(info) = &self.info else {
            return Fit::Yes;
        };
        if let Some(window) = info.context_window {
            let needed = facts.prompt_tokens + u64::from(facts.max_tokens.unwrap_or(0));
            if needed > window {
                return Fit::TooLong;
            }
        }
        let lacks = |feature| !info.features.is_empty() && !info.has(feature);
        if (facts.tools && lacks(Feature::Tools)) || (facts.vision && lacks(Feature::Vision)) {
            return Fit::Lacks;
        }
        Fit::Yes
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    Yes,
    TooLong,
    Lacks,
}

/// What routing needs to know of a request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    /// An estimate: a quarter of the prompt's bytes.
    pub prompt_tokens: u64,
    pub max_tokens: Option<u32>,
    pub tools: bool,
    pub vision: bool,
}

/// Most deployments one request is offered: more than any attempt limit needs, and it keeps
/// a model with hundreds of deployments from cloning them all per request.
const MAX_ORDER: usize = 16;

/// A public model: its deployments and how to choose among them.
#[derive(Debug)]
pub(crate) struct Plan {
    pub name: Arc<str>,
    /// The bounded metric label (`provider/*` for prefix routes).
    pub label: Arc<str>,
    pub strategy: Strategy,
    pub deployments: Vec<Arc<Deployment>>,
    pub fallbacks: Vec<String>,
    pub context_fallback: Option<String>,
    pub timeouts: Timeouts,
    cursor: AtomicUsize,
    /// Smooth weighted round robin's running weights.
    current: Mutex<Vec<i64>>,
    /// When the adaptive strategy next looks for stale deployments.
    next_exploration_scan: Mutex<Option<Instant>>,
    /// The adaptive strategy's last ranking.
    ranked: Mutex<Option<Arc<Ranked>>>,
}

/// An adaptive ranking, reused for `RANK_EVERY`.
#[derive(Debug)]
struct Ranked {
    at: Instant,
    candidates: Vec<usize>,
    order: Vec<usize>,
    tied: usize,
}

/// Why no deployment of a plan was tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unfit {
    /// The prompt exceeds every deployment's context window.
    TooLong,
    /// No deployment has the features the request needs.
    Lacks,
}

impl Plan {
    fn new(
        name: &str,
        label: Arc<str>,
        strategy: Strategy,
        deployments: Vec<Arc<Deployment>>,
        fallbacks: Vec<String>,
        context_fallback: Option<String>,
        timeouts: Timeouts,
    ) -> Plan {
        let count = deployments.len();
        Plan {
            name: Arc::from(name),
            label,
            strategy,
            deployments,
            fallbacks,
            context_fallback,
            timeouts,
            cursor: AtomicUsize::new(0),
            current: Mutex::new(vec![0; count]),
            next_exploration_scan: Mutex::new(None),
            ranked: Mutex::new(None),
        }
    }

    /// The deployments to try for this request, best first; open breakers last. Err when
    /// none fits the request.
    pub fn order(&self, facts: &Facts) -> Result<Vec<&Arc<Deployment>>, Unfit> {
        let mut fitting = Vec::with_capacity(self.deployments.len());
        let mut too_long = false;
        for (index, deployment) in self.deployments.iter().enumerate() {
            match deployment.fits(facts) {
                Fit::Yes => fitting.push(index),
                Fit::TooLong => too_long = true,
                Fit::Lacks => {}
            }
        }
        if fitting.is_empty() {
            return Err(if too_long {
                Unfit::TooLong
            } else {
                Unfit::Lacks
            });
        }
        // Open breakers reject at once: the strategy ranks the live deployments (so an open
        // one's share goes to all the others, not to its neighbour) and open ones come last.
        let (live, open): (Vec<usize>, Vec<usize>) = fitting
            .into_iter()
            .partition(|index| self.deployments[*index].health.breaker.is_permitted());
        let mut order = if live.is_empty() {
            open
        } else {
            let mut order = self.rank(&live, facts);
            order.extend(open);
            order
        };
        order.truncate(MAX_ORDER);
        // Borrowed, not cloned: every worker routes to the same deployments, and bumping
        // their reference counts per request made the cores fight over those cache lines.
        Ok(order.into_iter().map(|i| &self.deployments[i]).collect())
    }

    /// `candidates` (indexes) in the strategy's order.
    fn rank(&self, candidates: &[usize], facts: &Facts) -> Vec<usize> {
        let mut order = candidates.to_vec();
        if order.len() == 1 {
            return order;
        }
        let health = |i: usize| &self.deployments[i].health;
        match self.strategy {
            Strategy::Priority => {}
            Strategy::RoundRobin => {
                let start = self.cursor.fetch_add(1, Ordering::Relaxed) % order.len();
                order.rotate_left(start);
            }
            Strategy::Weighted => {
                let first = self.smooth_weighted(candidates);
                order.sort_by_key(|i| std::cmp::Reverse(self.deployments[*i].weight));
                if let Some(at) = order.iter().position(|i| *i == first) {
                    let chosen = order.remove(at);
                    order.insert(0, chosen);
                }
            }
            Strategy::LeastConnections => {
                // Ties go round robin, so equal loads still spread.
                let start = self.cursor.fetch_add(1, Ordering::Relaxed) % order.len();
                order.rotate_left(start);
                order.sort_by_key(|i| health(*i).in_flight.load(Ordering::Relaxed));
            }
            Strategy::Latency => {
                // Power of two choices: the better of two random ones goes first, the other
                // second, the rest in turn. Reading two deployments' figures, not all of them,
                // keeps the choice as cheap with fifty deployments as with two.
                let a = random_below(order.len());
                let b = (a + 1 + random_below(order.len() - 1)) % order.len();
                let (first, second) =
                    if health(order[a]).latency_cost() <= health(order[b]).latency_cost() {
                        (order[a], order[b])
                    } else {
                        (order[b], order[a])
                    };
                let start = self.cursor.fetch_add(1, Ordering::Relaxed) % order.len();
                order.rotate_left(start);
                order.retain(|i| *i != first && *i != second);
                order.splice(0..0, [first, second]);
            }
            Strategy::Cost => {
                sort_by_score(&mut order, |i| self.deployments[i].estimated_cost(facts));
            }
            Strategy::Adaptive => {
                let ranked = self.adaptive_ranking(&order, facts);
                order.clone_from(&ranked.order);
                if ranked.tied > 1 {
                    let start = self.cursor.fetch_add(1, Ordering::Relaxed) % ranked.tied;
                    order[..ranked.tied].rotate_left(start);
                }
                // Keep exploring: a deployment nobody has called for a while gets this
                // request, so one that recovered wins its traffic back.
                let now = Instant::now();
                if self.exploration_scan_due(now)
                    && let Some(at) = order
                        .iter()
                        .skip(1)
                        .position(|i| health(*i).claim_exploration(now))
                {
                    let chosen = order.remove(at + 1);
                    order.insert(0, chosen);
                }
            }
        }
        order
    }

    /// The adaptive order of `candidates`, best first, and how many share the top score.
    /// Scoring reads every candidate's figures, so it is done at most every `RANK_EVERY`
    /// for the same candidates and reused in between.
    fn adaptive_ranking(&self, candidates: &[usize], facts: &Facts) -> Arc<Ranked> {
        let now = Instant::now();
        if let Ok(cached) = self.ranked.lock()
            && let Some(ranked) = cached.as_ref()
            && now.saturating_duration_since(ranked.at) < RANK_EVERY
            && ranked.candidates == candidates
        {
            return ranked.clone();
        }
        let health = |i: usize| &self.deployments[i].health;
        // Latency without the load factor: the deployment that gets the traffic has the
        // most in flight, and scoring that would hand the traffic to a slower one in turn.
        let latencies: Vec<f64> = candidates.iter().map(|i| health(*i).latency()).collect();
        let costs: Vec<f64> = candidates
            .iter()
            .map(|i| self.deployments[*i].estimated_cost(facts))
            .collect();
        let max_latency = latencies.iter().copied().fold(f64::EPSILON, f64::max);
        let max_cost = costs.iter().copied().fold(f64::EPSILON, f64::max);
        let mut scored: Vec<(f64, usize)> = candidates
            .iter()
            .enumerate()
            .map(|(at, i)| {
                let score = health(*i).success_rate()
                    - 0.3 * latencies[at] / max_latency
                    - 0.2 * costs[at] / max_cost;
                (-score, *i)
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Deployments within a whisker of the best are as good as it: they share the traffic
        // in turn instead of the first one taking it all.
        let best = scored[0].0;
        let tied = scored
            .iter()
            .take_while(|(score, _)| *score - best <= ADAPTIVE_TIE)
            .count();
        let ranked = Arc::new(Ranked {
            at: now,
            candidates: candidates.to_vec(),
            order: scored.into_iter().map(|(_, i)| i).collect(),
            tied,
        });
        if let Ok(mut cached) = self.ranked.lock() {
            *cached = Some(ranked.clone());
        }
        ranked
    }

    /// Whether to look for stale deployments now: at most every `EXPLORE_SCAN`, so a model
    /// with many deployments does not read them all on every request.
    fn exploration_scan_due(&self, now: Instant) -> bool {
        let Ok(mut next) = self.next_exploration_scan.try_lock() else {
            return false;
        };
        if next.is_some_and(|next| now < next) {
            return false;
        }
        *next = Some(now + EXPLORE_SCAN);
        true
    }

    /// Nginx's smooth weighted round robin: exact shares, evenly interleaved.
    fn smooth_weighted(&self, candidates: &[usize]) -> usize {
        let Ok(mut current) = self.current.lock() else {
            return candidates[0];
        };
        let total: i64 = candidates
            .iter()
            .map(|i| i64::from(self.deployments[*i].weight))
            .sum();
        let mut best = candidates[0];
        for index in candidates {
            current[*index] += i64::from(self.deployments[*index].weight);
            if current[*index] > current[best] {
                best = *index;
            }
        }
        current[best] -= total;
        best
    }
}

/// Sorts `order` by ascending `score` (each computed once); returns the scores in the new
/// order.
fn sort_by_score(order: &mut [usize], score: impl Fn(usize) -> f64) -> Vec<f64> {
    let mut scored: Vec<(f64, usize)> = order.iter().map(|i| (score(*i), *i)).collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (slot, (_, index)) in order.iter_mut().zip(&scored) {
        *slot = *index;
    }
    scored.into_iter().map(|(score, _)| score).collect()
}

/// A random integer in `0..bound` (0 for an empty range).
fn random_below(bound: usize) -> usize {
    if bound == 0 {
        return 0;
    }
    (rand::random::<u64>() % bound as u64) as usize
}

/// A provider's API keys, used in turn; refused ones are disabled.
#[derive(Debug)]
pub(crate) struct KeyRing {
    provider: String,
    keys: Vec<SecretString>,
    disabled: Vec<AtomicBool>,
    next: AtomicUsize,
}

impl KeyRing {
    pub fn new(provider: &str, keys: Vec<SecretString>) -> Arc<KeyRing> {
        Arc::new(KeyRing {
            provider: provider.to_owned(),
            disabled: keys.iter().map(|_| AtomicBool::new(false)).collect(),
            keys,
            next: AtomicUsize::new(0),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The next enabled key and its index; `None` when every key was refused.
    pub fn pick(&self) -> Option<(usize, &SecretString)> {
        let count = self.keys.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| (start + offset) % count)
            .find(|index| !self.disabled[*index].load(Ordering::Relaxed))
            .map(|index| (index, &self.keys[index]))
    }

    /// Stops using a key the provider refused.
    pub fn disable(&self, index: usize) {
        if let Some(flag) = self.disabled.get(index)
            && !flag.swap(true, Ordering::Relaxed)
        {
            let left = self.enabled();
            tracing::error!(
                provider = %self.provider,
                key = index,
                keys_left = left,
                "Upstream API key refused by the provider; disabled it. An operator must replace it."
            );
            metrics::counter!(names::KEYS_DISABLED, "provider" => self.provider.clone())
                .increment(1);
        }
    }

    pub fn enabled(&self) -> usize {
        self.disabled
            .iter()
            .filter(|d| !d.load(Ordering::Relaxed))
            .count()
    }

    pub fn total(&self) -> usize {
        self.keys.len()
    }

    /// A header value holding the key, marked sensitive.
    pub fn header(key: &SecretString, bearer: bool) -> Option<HeaderValue> {
        let text = if bearer {
            format!("Bearer {}", key.expose_secret())
        } else {
            key.expose_secret().to_owned()
        };
        let mut value = HeaderValue::from_str(&text).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// A model as listed by `GET /v1/models`.
pub(crate) struct Listed {
    pub id: String,
    pub owned_by: Arc<str>,
    pub info: Option<Arc<ModelInfo>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("model `{model}` names provider `{provider}`, which is not configured")]
    UnknownProvider { model: String, provider: String },
    #[error("model `{model}` falls back to `{fallback}`, which is not a model")]
    UnknownFallback { model: String, fallback: String },
    #[error("routing rule {index} sends requests to `{model}`, which is not a model")]
    UnknownRuleTarget { index: usize, model: String },
    #[error("model `{0}` has no deployments")]
    NoDeployments(String),
}

/// Each health's breaker once, however many routes share it.
fn unique_breakers<'a>(healths: impl Iterator<Item = &'a Arc<Health>>) -> Vec<Arc<CircuitBreaker>> {
    let mut seen = std::collections::HashSet::new();
    healths
        .filter(|health| seen.insert(Arc::as_ptr(health)))
        .map(|health| health.breaker.clone())
        .collect()
}

/// Every model, deployment and key ring; shared by the HTTP workers.
pub struct Routing {
    plans: HashMap<String, Arc<Plan>>,
    pub(crate) listed: Vec<Listed>,
    /// One health per provider for `provider/<any model>` routes, so clients cannot mint
    /// breakers (or metric labels).
    wildcards: HashMap<String, (Arc<str>, Arc<Health>)>,
    /// Provider name → preset, for catalog lookups of prefix routes.
    presets: HashMap<String, String>,
    catalog: Catalog,
    pub(crate) keys: HashMap<String, Arc<KeyRing>>,
    pub(crate) budget: RetryBudget,
    pub(crate) settings: RoutingSettings,
}

impl Routing {
    /// Every deployment's circuit breaker, once each, prefix routes' included.
    pub fn breakers(&self) -> Vec<Arc<CircuitBreaker>> {
        let wildcards = self.wildcards.values().map(|(_, health)| health);
        unique_breakers(self.deployment_healths().chain(wildcards))
    }

    /// The breakers of configured deployments, once each: what the health score counts.
    /// Prefix routes (`provider/*`) are left out: they serve whatever model a client names,
    /// so their breaker says little about the provider as a whole.
    pub fn deployment_breakers(&self) -> Vec<Arc<CircuitBreaker>> {
        unique_breakers(self.deployment_healths())
    }

    /// Configured deployments whose breaker waits half-open for a call, once each.
    pub(crate) fn waiting_deployments(&self) -> Vec<Arc<Deployment>> {
        let mut seen = std::collections::HashSet::new();
        self.plans
            .values()
            .flat_map(|plan| plan.deployments.iter())
            .filter(|d| seen.insert(Arc::as_ptr(&d.health)))
            .filter(|d| d.health.breaker.state() == atalaya_resilience::State::HalfOpen)
            .cloned()
            .collect()
    }

    fn deployment_healths(&self) -> impl Iterator<Item = &Arc<Health>> {
        self.plans
            .values()
            .flat_map(|plan| plan.deployments.iter().map(|d| &d.health))
    }

    pub fn new(config: &GatewayConfig) -> Result<Arc<Routing>, RoutingError> {
        Routing::build(config, HashMap::new())
    }

    /// The routing for a reloaded configuration. Deployments of the providers `kept` says are
    /// unchanged keep their breaker, latency and success figures (the same `provider/model`
    /// is the same upstream); the others, and all of them when the breaker settings changed,
    /// start afresh.
    pub fn reload(
        config: &GatewayConfig,
        previous: &Routing,
        kept: impl Fn(&str) -> bool,
    ) -> Result<Arc<Routing>, RoutingError> {
        let mut healths = HashMap::new();
        if config.routing.breaker == previous.settings.breaker {
            for plan in previous.plans.values() {
                for deployment in plan.deployments.iter().filter(|d| kept(&d.provider)) {
                    healths.insert(deployment.id.to_string(), deployment.health.clone());
                }
            }
            for (provider, (label, health)) in &previous.wildcards {
                if kept(provider) {
                    healths.insert(label.to_string(), health.clone());
                }
            }
        }
        Routing::build(config, healths)
    }

    /// `healths`: deployment id (`provider/model`, `provider/*` for prefix routes) → the
    /// health it carries over.
    fn build(
        config: &GatewayConfig,
        mut healths: HashMap<String, Arc<Health>>,
    ) -> Result<Arc<Routing>, RoutingError> {
        let settings = config.routing.clone();
        let mut routing = Routing {
            plans: HashMap::new(),
            listed: Vec::new(),
            wildcards: HashMap::new(),
            presets: HashMap::new(),
            catalog: config.catalog.clone(),
            keys: HashMap::new(),
            budget: RetryBudget::new(
                settings.retry_budget_ratio,
                settings.retry_budget_floor,
                settings.retry_budget_window,
            ),
            settings,
        };
        let mut providers: Vec<(String, String, Vec<String>)> = Vec::new();
        if config.sim.is_some() {
            providers.push((
                SIM_PROVIDER.to_owned(),
                SIM_PROVIDER.to_owned(),
                vec![SIM_CHAT_MODEL.to_owned(), SIM_EMBED_MODEL.to_owned()],
            ));
        }
        for provider in &config.providers {
            routing.keys.insert(
                provider.name.clone(),
                KeyRing::new(&provider.name, provider.api_keys.clone()),
            );
            providers.push((
                provider.name.clone(),
                provider.preset.clone(),
                provider.models.clone(),
            ));
        }
        for (name, preset, _) in &providers {
            routing.presets.insert(name.clone(), preset.clone());
            let label: Arc<str> = Arc::from(format!("{name}/*"));
            let health = healths
                .remove(label.as_ref())
                .unwrap_or_else(|| Health::new(&label, &routing.settings));
            routing.wildcards.insert(name.clone(), (label, health));
        }
        // Each provider's own models, under their own names; the first provider to list a
        // name serves it.
        for (name, _, models) in &providers {
            for model in models {
                if routing.plans.contains_key(model) {
                    continue;
                }
                let deployment = routing.deployment(name, model, 1, &mut healths);
                let plan = Plan::new(
                    model,
                    Arc::from(model.as_str()),
                    Strategy::Priority,
                    vec![deployment.clone()],
                    Vec::new(),
                    None,
                    Timeouts::default(),
                );
                routing.add(plan, deployment.provider.clone(), deployment.info.clone());
            }
        }
        for model in &config.models {
            if model.deployments.is_empty() {
                return Err(RoutingError::NoDeployments(model.name.clone()));
            }
            let mut deployments = Vec::with_capacity(model.deployments.len());
            for spec in &model.deployments {
                if !routing.wildcards.contains_key(&spec.provider) {
                    return Err(RoutingError::UnknownProvider {
                        model: model.name.clone(),
                        provider: spec.provider.clone(),
                    });
                }
                deployments.push(routing.deployment(
                    &spec.provider,
                    &spec.model,
                    spec.weight,
                    &mut healths,
                ));
            }
            let owner = deployments[0].provider.clone();
            let info = deployments[0].info.clone();
            let plan = Plan::new(
                &model.name,
                Arc::from(model.name.as_str()),
                model.strategy,
                deployments,
                model.fallbacks.clone(),
                model.context_fallback.clone(),
                model.timeouts,
            );
            routing.add(plan, owner, info);
        }
        for model in &config.models {
            for fallback in model.fallbacks.iter().chain(&model.context_fallback) {
                if routing.plan(fallback).is_none() {
                    return Err(RoutingError::UnknownFallback {
                        model: model.name.clone(),
                        fallback: fallback.clone(),
                    });
                }
            }
        }
        for (index, rule) in routing.settings.rules.iter().enumerate() {
            if routing.plan(&rule.route_to).is_none() {
                return Err(RoutingError::UnknownRuleTarget {
                    index,
                    model: rule.route_to.clone(),
                });
            }
        }
        Ok(Arc::new(routing))
    }

    fn info(&self, provider: &str, model: &str) -> Option<Arc<ModelInfo>> {
        let preset = self.presets.get(provider).map(String::as_str).unwrap_or("");
        self.catalog
            .get(provider, model)
            .or_else(|| self.catalog.get(preset, model))
            // Azure deployments are usually named after the OpenAI model and priced like it.
            .or_else(|| {
                (preset == "azure")
                    .then(|| self.catalog.get("openai", model))
                    .flatten()
            })
    }

    /// A deployment; the same (provider, model) shares one health everywhere it appears.
    fn deployment(
        &self,
        provider: &str,
        model: &str,
        weight: u32,
        healths: &mut HashMap<String, Arc<Health>>,
    ) -> Arc<Deployment> {
        let id = format!("{provider}/{model}");
        let health = healths
            .entry(id.clone())
            .or_insert_with(|| Health::new(&id, &self.settings))
            .clone();
        Arc::new(Deployment {
            id: Arc::from(id),
            provider: Arc::from(provider),
            upstream_model: Arc::from(model),
            weight: weight.max(1),
            info: self.info(provider, model),
            health,
        })
    }

    /// Adds (or, for a `[[models]]` entry, replaces) a public model.
    fn add(&mut self, plan: Plan, owner: Arc<str>, info: Option<Arc<ModelInfo>>) {
        let name = plan.name.to_string();
        if self.plans.insert(name.clone(), Arc::new(plan)).is_none() {
            self.listed.push(Listed {
                id: name,
                owned_by: owner,
                info,
            });
        } else if let Some(listed) = self.listed.iter_mut().find(|l| l.id == name) {
            listed.owned_by = owner;
            listed.info = info;
        }
    }

    /// A listed model, or `provider/upstream-model` for any configured provider.
    pub(crate) fn plan(&self, model: &str) -> Option<Arc<Plan>> {
        if let Some(plan) = self.plans.get(model) {
            return Some(plan.clone());
        }
        let (provider, upstream_model) = model.split_once('/')?;
        let (label, health) = self.wildcards.get(provider)?;
        if upstream_model.is_empty() {
            return None;
        }
        let deployment = Arc::new(Deployment {
            id: label.clone(),
            provider: Arc::from(provider),
            upstream_model: Arc::from(upstream_model),
            weight: 1,
            info: self.info(provider, upstream_model),
            health: health.clone(),
        });
        Some(Arc::new(Plan::new(
            model,
            label.clone(),
            Strategy::Priority,
            vec![deployment],
            Vec::new(),
            None,
            Timeouts::default(),
        )))
    }

    /// The model a routing rule sends this request to, if one matches.
    pub(crate) fn rewrite(
        &self,
        model: &str,
        key: Option<&atalaya_store::KeyRecord>,
        headers: &HeaderMap,
        metadata: &[(String, String)],
    ) -> Option<&str> {
        self.settings
            .rules
            .iter()
            .find(|rule| rule_matches(rule, model, key, headers, metadata))
            .map(|rule| rule.route_to.as_str())
    }

    /// Enabled and total keys of a provider.
    pub(crate) fn key_status(&self, provider: &str) -> Option<(usize, usize)> {
        self.keys
            .get(provider)
            .map(|ring| (ring.enabled(), ring.total()))
    }
}

fn rule_matches(
    rule: &RouteRule,
    model: &str,
    key: Option<&atalaya_store::KeyRecord>,
    headers: &HeaderMap,
    metadata: &[(String, String)],
) -> bool {
    (rule.models.is_empty() || rule.models.iter().any(|m| m == model))
        && (rule.keys.is_empty() || key.is_some_and(|key| rule.keys.contains(&key.id.0)))
        && (rule.teams.is_empty()
            || key
                .and_then(|key| key.team.as_ref())
                .is_some_and(|team| rule.teams.contains(team)))
        && rule.headers.iter().all(|(name, value)| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == value)
        })
        && rule
            .metadata
            .iter()
            .all(|(key, value)| metadata.iter().any(|(k, v)| k == key && v == value))
        && !rule.route_to.is_empty()
}

/// Settings for the providers' HTTP adapters that come from routing: their key rings.
pub(crate) fn key_ring(routing: &Routing, provider: &ProviderSettings) -> Arc<KeyRing> {
    routing
        .keys
        .get(&provider.name)
        .cloned()
        .unwrap_or_else(|| KeyRing::new(&provider.name, provider.api_keys.clone()))
}

#[cfg(test)]
mod tests;
