//! Prometheus metrics, fed by the recorder with each finished request. One registry
//! per server (no process globals), so several servers in one test process stay apart.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::backend::health::HealthReport;
use crate::store::{LogRecord, Logger};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub backend: String,
    pub endpoint: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    pub direction: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<ModelLabels, Histogram>,
    ttft: Family<ModelLabels, Histogram>,
    tokens: Family<TokenLabels, Counter>,
    tokens_per_second: Family<ModelLabels, Histogram>,
    cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    inflight: Gauge,
    log_dropped: Counter,
    /// The logger's drop count already added to `log_dropped`.
    log_dropped_seen: AtomicU64,
    log_queue_depth: Gauge,
    log_store_up: Gauge,
    backend_up: Family<BackendLabels, Gauge>,
    backend_breaker_open: Family<BackendLabels, Gauge>,
    cache_lookups: Family<CacheLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub model: String,
    pub result: &'static str,
}

/// Seconds, from 1 ms to 10 min (the default backend timeout is 5 min).
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ])
}

fn rate_histogram() -> Histogram {
    Histogram::new([
        1.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 1280.0, 2560.0, 5120.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ollabridge");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<ModelLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let ttft = Family::<ModelLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let tokens = Family::<TokenLabels, Counter>::default();
        let tokens_per_second =
            Family::<ModelLabels, Histogram>::new_with_constructor(rate_histogram as fn() -> Histogram);
        let cost = Family::<ModelLabels, Counter<f64, AtomicU64>>::default();
        let (inflight, log_queue_depth, log_store_up) = (Gauge::default(), Gauge::default(), Gauge::default());
        let log_dropped = Counter::default();
        let (backend_up, backend_breaker_open) = (Family::default(), Family::default());
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Response cache lookups, by model and result (hit or miss)",
            cache_lookups.clone(),
        );
        registry.register(
            "backend_up",
            "1 when the backend's last health check passed and its breaker is not open",
            backend_up.clone(),
        );
        registry.register(
            "backend_breaker_open",
            "1 while the backend's circuit breaker keeps requests away",
            backend_breaker_open.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by model, backend, endpoint and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Request received to response end",
            duration.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Request received to first token sent",
            ttft.clone(),
        );
        registry.register("tokens", "Tokens processed, prompt or completion", tokens.clone());
        registry.register(
            "generation_tokens_per_second",
            "Completion tokens per second of generation",
            tokens_per_second.clone(),
        );
        registry.register("cost", "Estimated cost from the configured prices", cost.clone());
        registry.register("inflight_requests", "Requests being answered now", inflight.clone());
        registry.register(
            "log_dropped",
            "Log records lost: dropped because the queue was full, or refused by the database",
            log_dropped.clone(),
        );
        registry.register(
            "log_queue_depth",
            "Log records waiting for the writer",
            log_queue_depth.clone(),
        );
        registry.register(
            "log_store_up",
            "1 while the log database takes writes, 0 while the writer holds records and retries",
            log_store_up.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            ttft,
            tokens,
            tokens_per_second,
            cost,
            inflight,
            log_dropped,
            log_dropped_seen: AtomicU64::new(0),
            log_queue_depth,
            log_store_up,
            backend_up,
            backend_breaker_open,
            cache_lookups,
        }
    }

    /// A finished request, as it is logged. Labels take only values from a bounded set,
    /// as any client may send anything: the model's name when it was resolved (or a
    /// backend answered for it), the backend's when one was asked, a known route.
    pub fn observe(&self, r: &LogRecord, model_known: bool) {
        let model = match model_known || r.status_code < 400 {
            true => r.model.clone().unwrap_or_default(),
            false => String::new(),
        };
        self.requests
            .get_or_create(&RequestLabels {
                model: model.clone(),
                backend: r.backend.clone().unwrap_or_default(),
                endpoint: endpoint_label(&r.endpoint).to_owned(),
                status: r.status_code.to_string(),
            })
            .inc();
        let by_model = ModelLabels { model: model.clone() };
        self.duration
            .get_or_create(&by_model)
            .observe(r.latency_ms as f64 / 1000.0);
        if let Some(ttft) = r.ttft_ms {
            self.ttft.get_or_create(&by_model).observe(ttft / 1000.0);
        }
        for (direction, count) in [("prompt", r.prompt_tokens), ("completion", r.completion_tokens)] {
            if let Some(n) = count {
                self.tokens
                    .get_or_create(&TokenLabels {
                        model: model.clone(),
                        direction,
                    })
                    .inc_by(n);
            }
        }
        if let Some(rate) = r.tokens_per_second {
            self.tokens_per_second.get_or_create(&by_model).observe(rate);
        }
        if let Some(cost) = r.cost {
            self.cost.get_or_create(&by_model).inc_by(cost);
        }
    }

    pub fn cache_lookup(&self, model: &str, hit: bool) {
        self.cache_lookups
            .get_or_create(&CacheLabels {
                model: model.to_owned(),
                result: if hit { "hit" } else { "miss" },
            })
            .inc();
    }

    /// Counts a request for as long as the guard lives.
    pub fn inflight(&self) -> InflightGuard {
        self.inflight.inc();
        InflightGuard(self.inflight.clone())
    }

    /// The text exposition (OpenMetrics), with the log queue's and the backends' gauges
    /// read now.
    pub fn render(&self, logger: &Logger, backends: &[(String, HealthReport)]) -> String {
        for (name, health) in backends {
            let labels = BackendLabels { backend: name.clone() };
            let open = health.breaker == "open";
            self.backend_up
                .get_or_create(&labels)
                .set(i64::from(health.healthy && !open));
            self.backend_breaker_open.get_or_create(&labels).set(i64::from(open));
        }
        let dropped = logger.dropped();
        let seen = self
            .log_dropped_seen
            .swap(dropped, std::sync::atomic::Ordering::Relaxed);
        self.log_dropped.inc_by(dropped.saturating_sub(seen));
        self.log_queue_depth
            .set(i64::try_from(logger.queue_depth()).unwrap_or(i64::MAX));
        self.log_store_up.set(i64::from(logger.store_up()));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// The routes requests are counted by; any other path (a pass-through's
/// `/api/blobs/<digest>`, say) counts as `other`.
const ENDPOINTS: &[&str] = &[
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/api/pull",
    "/api/push",
    "/api/create",
    "/api/copy",
    "/api/delete",
    "/api/show",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
];

fn endpoint_label(endpoint: &str) -> &str {
    match ENDPOINTS.contains(&endpoint) {
        true => endpoint,
        false => "other",
    }
}

/// A request starting or ending, as live views see it. Slow listeners miss events
/// rather than slow requests down (a bounded broadcast channel).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RequestEvent {
    Started {
        request_id: String,
        endpoint: String,
        timestamp: String,
        model: Option<String>,
    },
    /// Output so far of a streaming answer (chunks with content), every ~250 ms.
    Progress {
        request_id: String,
        tokens: u64,
    },
    Finished(Box<LogRecord>),
}

pub struct InflightGuard(Gauge);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
