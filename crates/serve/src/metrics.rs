//! Prometheus metrics (text exposition format at `GET /metrics`): request counts by route and
//! status, latency histograms by route, scored batch sizes, the model version and reloads.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~1.6 s
    Histogram::new(exponential_buckets(1e-4, 2.0, 15))
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    batch_rows: Histogram,
    batch_requests: Histogram,
    reloads: Family<OutcomeLabels, Counter>,
    pub model_version: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("recforge");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let batch_rows = Histogram::new(exponential_buckets(1.0, 2.0, 15));
        let batch_requests = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        let reloads = Family::<OutcomeLabels, Counter>::default();
        let model_version = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register("batch_rows", "Rows per scored batch", batch_rows.clone());
        registry.register(
            "batch_requests",
            "Requests merged into one scored batch",
            batch_requests.clone(),
        );
        registry.register("model_reloads", "Model reloads by outcome", reloads.clone());
        registry.register(
            "model_version",
            "Version of the model being served",
            model_version.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            requests,
            latency,
            batch_rows,
            batch_requests,
            reloads,
            model_version,
        }
    }

    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        let route = route.to_string();
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }

    pub fn observe_batch(&self, rows: usize, requests: usize) {
        self.batch_rows.observe(rows as f64);
        self.batch_requests.observe(requests as f64);
    }

    pub fn reload(&self, outcome: &str) {
        self.reloads
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
