//! Observability set up once: structured logs (`RUST_LOG`, optional JSON), and one HTTP server
//! with `/metrics` (one Prometheus registry per process), `/healthz` and `/readyz`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::sync::RwLock;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format must be text or json, not '{other}'")),
        }
    }
}

pub mod traces;

pub use traces::{ObjectTrace, SpanParent, TraceArgs, TracesConfig, TracesGuard};

/// Installs the global tracing subscriber, logs only. `RUST_LOG` overrides `default_filter`.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    install(format, default_filter, None, "x0tta6bl4");
}

/// Installs the global tracing subscriber: logs, and spans exported over OTLP when
/// `traces.endpoint` is set. `RUST_LOG` overrides `default_filter`, for both. Keep the guard
/// for the life of the process: dropping it flushes the spans still buffered.
pub fn init(format: LogFormat, default_filter: &str, traces: &TracesConfig) -> anyhow::Result<TracesGuard> {
    let provider = traces::provider(traces)?;
    let guard = traces::guard(provider.clone());
    install(format, default_filter, provider.as_ref(), traces.service_name);
    Ok(guard)
}

fn install(
    format: LogFormat,
    default_filter: &str,
    provider: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
    tracer_name: &'static str,
) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_target(true).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_target(true)
            .json()
            .flatten_event(true)
            .boxed(),
    };
    let spans = provider.map(|p| traces::layer(p, tracer_name));
    // A second init (tests run several agents in one process) keeps the first subscriber.
    if let Err(e) = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .try_init()
    {
        tracing::debug!("keeping the tracing subscriber already installed: {e}");
    }
}

/// Registers `<name>{version}` = 1 (a `build_info` gauge, kube-state-metrics style), so every
/// other series can be joined to the version that produced it.
pub fn register_build_info(registry: &Registry, name: &str, version: &str) -> prometheus::Result<()> {
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(name, "Always 1; the version of the running binary in its label"),
        &["version"],
    )?;
    info.with_label_values(&[version]).set(1);
    registry.register(Box::new(info))
}

/// Registers the standard `process_*` series of this process (CPU seconds, resident and
/// virtual memory, open and maximum file descriptors, threads, start time), read from /proc
/// at each scrape. Elsewhere than Linux there is no /proc and nothing is registered.
pub fn register_process_metrics(registry: &Registry) -> prometheus::Result<()> {
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    #[cfg(not(target_os = "linux"))]
    let _ = registry;
    Ok(())
}

/// Why the process is not ready yet, or `None` once it is. Shared with `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness {
    live: Arc<AtomicBool>,
    not_ready_because: Arc<RwLock<Option<String>>>,
}

impl Readiness {
    /// Starts not ready, with the reason given.
    pub fn new(initial_reason: impl Into<String>) -> Self {
        let readiness = Self::default();
        readiness.live.store(true, Ordering::Relaxed);
        *readiness.not_ready_because.try_write().expect("fresh lock") = Some(initial_reason.into());
        readiness
    }

    pub async fn set_ready(&self) {
        *self.not_ready_because.write().await = None;
    }

    pub async fn set_not_ready(&self, reason: impl Into<String>) {
        *self.not_ready_because.write().await = Some(reason.into());
    }

    pub async fn is_ready(&self) -> bool {
        self.not_ready_because.read().await.is_none()
    }

    /// Marks the process as no longer live; `/healthz` then fails so the kubelet restarts it.
    pub fn set_unhealthy(&self) {
        self.live.store(false, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct ServerState {
    registry: Registry,
    readiness: Readiness,
}

/// The router of `/metrics`, `/healthz` and `/readyz`.
pub fn router(registry: Registry, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ServerState { registry, readiness })
}

/// Serves [`router`] on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, registry: Registry, readiness: Readiness) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for /metrics and probes on {addr}: {e}"))?;
    // The bound address, not the requested one: with port 0 only this says where to scrape.
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(registry, readiness)).await?;
    Ok(())
}

async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    let mut body = Vec::new();
    match TextEncoder::new().encode(&state.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn healthz(State(state): State<ServerState>) -> impl IntoResponse {
    if state.readiness.live.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    }
}

async fn readyz(State(state): State<ServerState>) -> impl IntoResponse {
    match state.readiness.not_ready_because.read().await.clone() {
        None => (StatusCode::OK, "ready".to_owned()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[test]
    fn build_info_and_process_metrics_are_served() {
        let registry = Registry::new();
        register_build_info(&registry, "x0_test_build_info", "1.2.3").unwrap();
        register_process_metrics(&registry).unwrap();
        let text = TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
        assert!(
            text.contains(r#"x0_test_build_info{version="1.2.3"} 1"#),
            "{text}"
        );
        #[cfg(target_os = "linux")]
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }

    #[tokio::test]
    async fn readyz_reports_the_reason_until_ready_and_metrics_are_served() {
        let registry = Registry::new();
        let counter = prometheus::IntCounter::new("x0_test_total", "a test counter").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc();
        let readiness = Readiness::new("CRD meshnetworks.x0tta6bl4.io missing");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(registry, readiness.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let not_ready = get(addr, "/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.contains("meshnetworks.x0tta6bl4.io missing"));
        readiness.set_ready().await;
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/metrics").await.contains("x0_test_total 1"));
        readiness.set_unhealthy();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 503"));
    }
}
