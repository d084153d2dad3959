//! Prometheus metrics at `GET /metrics`: request counts by route and status (`/mcp` and
//! unmatched paths included), latency histograms by route, MCP tool calls, scored batch
//! sizes, the model version and reloads. `prometheus-client` writes OpenMetrics text; a client
//! that does not ask for it gets the classic text format (version 0.0.4), converted.

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
    outcome: String,
}

/// The content type of [`Metrics::render`]'s text.
pub const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`to_classic`]'s text.
pub const CLASSIC_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the request's `Accept` names OpenMetrics (Prometheus sends it first).
pub fn wants_openmetrics(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let essence = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            essence.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
}

/// OpenMetrics text as the classic Prometheus text format: a counter family is named after
/// its `_total` samples in `# HELP`/`# TYPE`, and `# UNIT` and `# EOF` are dropped.
pub fn to_classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
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
    tool_calls: Family<ToolLabels, Counter>,
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
        let tool_calls = Family::<ToolLabels, Counter>::default();
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
            "mcp_tool_calls",
            "MCP tool calls (stdio and HTTP) by tool and outcome",
            tool_calls.clone(),
        );
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
            tool_calls,
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

    /// One MCP tool call; `outcome` is `ok`, `error` (a tool error) or `unknown_tool`.
    pub fn tool_call(&self, tool: &str, outcome: &str) {
        self.tool_calls
            .get_or_create(&ToolLabels {
                tool: tool.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderMap};

    #[test]
    fn classic_text_names_counters_by_their_samples() {
        let m = Metrics::new();
        m.observe_request("/v1/predict", 200, 0.01);
        m.reload("ok");
        let om = m.render();
        assert!(om.contains("# TYPE recforge_http_requests counter"), "{om}");
        assert!(om.trim_end().ends_with("# EOF"));
        let classic = to_classic(&om);
        assert!(classic.contains("# TYPE recforge_http_requests_total counter"));
        assert!(classic.contains("# HELP recforge_http_requests_total "));
        assert!(classic.contains("# TYPE recforge_model_reloads_total counter"));
        assert!(classic.contains("# TYPE recforge_model_version gauge"));
        assert!(classic.contains("# TYPE recforge_http_request_duration_seconds histogram"));
        assert!(!classic.contains("# EOF"));
        // every sample belongs to the family its # TYPE line names
        let mut family = "";
        for line in classic.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(name.starts_with(family), "{name} under {family}");
            }
        }
    }

    #[test]
    fn openmetrics_is_negotiated() {
        let accept = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, v.parse().unwrap());
            wants_openmetrics(&h)
        };
        assert!(accept(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!accept("text/plain"));
        assert!(!accept("*/*"));
        assert!(!accept("application/openmetrics-text;q=0"));
        assert!(!wants_openmetrics(&HeaderMap::new()));
    }
}
