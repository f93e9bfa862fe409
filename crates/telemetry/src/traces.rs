//! Traces: `tracing` spans exported over OTLP/HTTP (protobuf) to a collector, when an endpoint
//! is configured; off by default, and then nothing is exported and nothing is buffered.
//!
//! Spans about one Kubernetes object share that object's trace: its `metadata.uid` is a UUID,
//! 128 bits, and is used as the trace id, with a root span id derived from it too
//! ([`ObjectTrace`]). So the operator (which records the object's root span when the object
//! finishes) and every agent working for that object put their spans in one trace without
//! agreeing on anything at run time; what one agent asks another to do on the mesh carries the
//! asking span's context ([`SpanParent`]) so the tree shows who caused what.
use std::cell::Cell;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Where and how to export spans.
#[derive(Debug, Clone)]
pub struct TracesConfig {
    /// The collector's OTLP/HTTP base URL (`http(s)://host:4318`; `/v1/traces` is appended
    /// unless the URL already ends with it). `None`: traces are off.
    pub endpoint: Option<String>,
    /// `service.name`: which program (`x0tta6bl4-operator`, `x0tta6bl4-node-agent`).
    pub service_name: &'static str,
    /// `service.instance.id`: which copy of it (the agent's node, the operator's identity).
    pub instance: String,
    /// Share of new traces kept (0.0..=1.0); spans whose parent was sampled are always kept, so
    /// a trace is never cut into pieces.
    pub sample_ratio: f64,
    /// More resource attributes (for example `k8s.node.name`).
    pub attributes: Vec<(&'static str, String)>,
}

/// The trace options both programs take on their command line.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// Export spans to this OpenTelemetry collector (OTLP over HTTP, e.g.
    /// http://otel-collector:4318); traces are off without it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces exported (0.0..=1.0); a span whose parent was exported always is.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 1.0)]
    pub trace_sample_ratio: f64,
}

impl TraceArgs {
    /// The configuration for `service_name`'s copy `instance`.
    pub fn config(
        &self,
        service_name: &'static str,
        instance: String,
        attributes: Vec<(&'static str, String)>,
    ) -> TracesConfig {
        TracesConfig {
            endpoint: self.otlp_endpoint.clone(),
            service_name,
            instance,
            sample_ratio: self.trace_sample_ratio,
            attributes,
        }
    }
}

/// Keeps the exporter alive; dropping it flushes what is buffered (bounded by the exporter's
/// timeout) and stops the export thread.
#[must_use = "dropping the guard stops the exporter"]
pub struct TracesGuard(Option<SdkTracerProvider>);

impl TracesGuard {
    /// Whether spans are being exported.
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for TracesGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            // Export what is left; a collector that is down cannot hold the process hostage:
            // the exporter's timeout bounds this.
            if let Err(e) = provider.shutdown() {
                eprintln!("traces: flushing spans at exit failed: {e}");
            }
        }
    }
}

/// The full traces URL for an OTLP/HTTP base URL, or what is wrong with it.
pub fn traces_url(endpoint: &str) -> Result<String, String> {
    let endpoint = endpoint.trim();
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| format!("'{endpoint}' must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("'{endpoint}' names no host"));
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    })
}

/// Builds the exporting tracer provider, or `None` when traces are off.
pub(crate) fn provider(config: &TracesConfig) -> anyhow::Result<Option<SdkTracerProvider>> {
    let Some(endpoint) = config.endpoint.as_deref().filter(|e| !e.trim().is_empty()) else {
        return Ok(None);
    };
    let url = traces_url(endpoint).map_err(|e| anyhow::anyhow!("OTLP endpoint: {e}"))?;
    if !(0.0..=1.0).contains(&config.sample_ratio) {
        anyhow::bail!(
            "trace sample ratio must be within 0.0..=1.0, not {}",
            config.sample_ratio
        );
    }
    let mut resource = Resource::builder()
        .with_service_name(config.service_name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attribute(KeyValue::new("service.instance.id", config.instance.clone()));
    for (key, value) in &config.attributes {
        resource = resource.with_attribute(KeyValue::new(*key, value.clone()));
    }
    let resource = resource.build();
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
    // The blocking HTTP client may not be built on an async runtime's thread (it owns a
    // runtime of its own), and the caller may be on one: build the exporter on a plain thread.
    let exporter = std::thread::spawn(move || {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(5))
            .build()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("building the OTLP exporter panicked"))??;
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_id_generator(ObjectIdGenerator::default())
            .with_resource(resource)
            .build(),
    ))
}

pub(crate) fn guard(provider: Option<SdkTracerProvider>) -> TracesGuard {
    if let Some(provider) = &provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    TracesGuard(provider)
}

pub(crate) fn layer<S>(provider: &SdkTracerProvider, name: &'static str) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(name))
}

thread_local! {
    /// Ids the next span built on this thread takes instead of random ones (see
    /// [`ObjectTrace::record_root`]): the SDK always asks its id generator, so this is how a
    /// span gets an id chosen in advance.
    static NEXT_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Random ids, except for a root span whose ids were chosen in advance on this thread.
#[derive(Debug, Default)]
struct ObjectIdGenerator {
    random: RandomIdGenerator,
}

impl IdGenerator for ObjectIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        match NEXT_IDS.get() {
            Some((trace, _)) => {
                NEXT_IDS.set(None);
                trace
            }
            None => self.random.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        // The SDK asks for the span id first, then (for a root) the trace id: keep the trace
        // id for that second call.
        match NEXT_IDS.get() {
            Some((trace, span)) if span != SpanId::INVALID => {
                NEXT_IDS.set(Some((trace, SpanId::INVALID)));
                span
            }
            _ => self.random.new_span_id(),
        }
    }
}

/// The trace of one Kubernetes object (an FLTrainingRound, a ChaosExperiment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectTrace {
    pub trace_id: TraceId,
    pub root_span_id: SpanId,
}

impl ObjectTrace {
    /// From the object's `metadata.uid` (a UUID); `None` if it is not one (then spans about
    /// the object are not tied together, nothing else changes).
    pub fn for_uid(uid: &str) -> Option<ObjectTrace> {
        let hex: String = uid.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 {
            return None;
        }
        let id = u128::from_str_radix(&hex, 16).ok().filter(|id| *id != 0)?;
        let bytes = id.to_be_bytes();
        let mut span = [0u8; 8];
        span.copy_from_slice(&bytes[8..]);
        // The root span id is the UUID's random half; all zeros is not a valid span id.
        let span = u64::from_be_bytes(span).max(1);
        Some(ObjectTrace {
            trace_id: TraceId::from_bytes(bytes),
            root_span_id: SpanId::from_bytes(span.to_be_bytes()),
        })
    }

    /// The trace id as collectors print it (32 lowercase hex digits).
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", u128::from_be_bytes(self.trace_id.to_bytes()))
    }

    /// The object's root span as a parent, for a span recorded before the root exists.
    pub fn parent(&self) -> SpanParent {
        SpanParent {
            trace_id: self.trace_id.to_bytes(),
            span_id: self.root_span_id.to_bytes(),
            sampled: true,
        }
    }

    /// Records the object's root span, `start` to `end` (what the object's lifetime was). A
    /// no-op while traces are off.
    pub fn record_root(
        &self,
        name: &'static str,
        start: SystemTime,
        end: SystemTime,
        attributes: &[(&'static str, String)],
    ) {
        NEXT_IDS.set(Some((self.trace_id, self.root_span_id)));
        record(name, start, end, attributes, &Context::new());
        // With the no-op provider the generator was not asked: forget the chosen ids.
        NEXT_IDS.set(None);
    }

    /// Records a span under the object's root, `start` to `end`, for something whose duration
    /// is known only once it is over (a fault's injection window on one agent).
    pub fn record_child(
        &self,
        name: &'static str,
        start: SystemTime,
        end: SystemTime,
        attributes: &[(&'static str, String)],
    ) {
        let parent = self.parent();
        record(
            name,
            start,
            end,
            attributes,
            &Context::new().with_remote_span_context(parent.span_context()),
        );
    }
}

/// A finished span with explicit times, through the global provider (a no-op while off).
fn record(
    name: &'static str,
    start: SystemTime,
    end: SystemTime,
    attributes: &[(&'static str, String)],
    parent: &Context,
) {
    let tracer = opentelemetry::global::tracer("x0tta6bl4");
    let attributes = attributes
        .iter()
        .map(|(key, value)| KeyValue::new(*key, value.clone()));
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(&tracer, parent);
    opentelemetry::trace::Span::end_with_timestamp(&mut span, end.max(start));
}

/// A span's context as it travels to another agent inside a signed mesh message: the W3C
/// trace-context fields, without the text encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl SpanParent {
    /// The context of `span`, or `None` while traces are off (the span has no valid context).
    pub fn of(span: &tracing::Span) -> Option<SpanParent> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| SpanParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            sampled: sc.is_sampled(),
        })
    }

    fn span_context(&self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            if self.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        )
    }

    /// Makes `span` a child of this (remote) parent. Invalid ids are ignored: the span keeps
    /// its own trace.
    pub fn adopt(&self, span: &tracing::Span) {
        let sc = self.span_context();
        if sc.is_valid() {
            // Fails only once the span has started recording children; ours are fresh.
            let _ = span.set_parent(Context::new().with_remote_span_context(sc));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_is_the_trace_id_and_its_random_half_the_root_span() {
        let trace = ObjectTrace::for_uid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0").expect("a UUID");
        assert_eq!(trace.trace_id_hex(), "0f1e2d3c4b5a69788796a5b4c3d2e1f0");
        assert_eq!(
            trace.root_span_id,
            SpanId::from_bytes(0x8796_a5b4_c3d2_e1f0u64.to_be_bytes())
        );
        assert_eq!(trace.parent().trace_id, trace.trace_id.to_bytes());
        for not_a_uuid in [
            "",
            "demo",
            "0f1e2d3c-4b5a-6978-8796",
            "00000000-0000-0000-0000-000000000000",
            "zz1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        ] {
            assert_eq!(ObjectTrace::for_uid(not_a_uuid), None, "{not_a_uuid:?}");
        }
    }

    #[test]
    fn endpoints_get_the_traces_path_once_and_bad_ones_say_why() {
        assert_eq!(
            traces_url("http://c:4318").as_deref(),
            Ok("http://c:4318/v1/traces")
        );
        assert_eq!(
            traces_url("https://c:4318/").as_deref(),
            Ok("https://c:4318/v1/traces")
        );
        assert_eq!(
            traces_url("http://c/v1/traces").as_deref(),
            Ok("http://c/v1/traces")
        );
        assert!(traces_url("c:4318").unwrap_err().contains("http:// or https://"));
        assert!(traces_url("http:///v1").unwrap_err().contains("no host"));
    }

    #[test]
    fn chosen_ids_go_to_one_root_span_only() {
        let generator = ObjectIdGenerator::default();
        let trace = ObjectTrace::for_uid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0").expect("a UUID");
        NEXT_IDS.set(Some((trace.trace_id, trace.root_span_id)));
        assert_eq!(generator.new_span_id(), trace.root_span_id);
        assert_eq!(generator.new_trace_id(), trace.trace_id);
        assert_ne!(generator.new_span_id(), trace.root_span_id);
        assert_ne!(generator.new_trace_id(), trace.trace_id);
    }

    /// What the operator and two agents record for one object, through the real SDK and the
    /// `tracing` layer, exported to memory.
    #[test]
    fn an_object_is_one_trace_and_a_carried_context_parents_the_remote_span() {
        use opentelemetry_sdk::trace::InMemorySpanExporter;
        use tracing_subscriber::layer::SubscriberExt as _;

        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .with_id_generator(ObjectIdGenerator::default())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        let trace = ObjectTrace::for_uid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0").expect("a UUID");
        let subscriber = tracing_subscriber::registry().with(layer(&provider, "test"));
        let carried = tracing::subscriber::with_default(subscriber, || {
            // The aggregator's round, under the object's root; its context goes in the request.
            let round = tracing::info_span!("fl.round");
            trace.parent().adopt(&round);
            let carried = round.in_scope(|| SpanParent::of(&tracing::Span::current()));
            // A participant, elsewhere, with only the carried bytes.
            let train = tracing::info_span!("fl.train");
            carried.expect("a traced span has a context").adopt(&train);
            drop(train);
            drop(round);
            carried
        });
        let now = SystemTime::now();
        trace.record_child("chaos.injection", now - Duration::from_secs(2), now, &[]);
        trace.record_root(
            "FLTrainingRound",
            now - Duration::from_secs(5),
            now,
            &[("phase", "Completed".into())],
        );
        provider.force_flush().expect("flushed");
        let spans = exporter.get_finished_spans().expect("spans");
        let by_name = |name: &str| {
            spans
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("no span {name} in {spans:?}"))
        };
        for span in &spans {
            assert_eq!(span.span_context.trace_id(), trace.trace_id, "{}", span.name);
        }
        let root = by_name("FLTrainingRound");
        assert_eq!(root.span_context.span_id(), trace.root_span_id);
        assert_eq!(root.parent_span_id, SpanId::INVALID);
        assert_eq!(
            root.end_time.duration_since(root.start_time).ok(),
            Some(Duration::from_secs(5))
        );
        let round = by_name("fl.round");
        assert_eq!(round.parent_span_id, trace.root_span_id);
        assert_eq!(
            carried.map(|c| c.span_id),
            Some(round.span_context.span_id().to_bytes())
        );
        assert_eq!(by_name("fl.train").parent_span_id, round.span_context.span_id());
        assert_eq!(by_name("chaos.injection").parent_span_id, trace.root_span_id);
        assert_eq!(spans.len(), 4);
        // Without the layer a span has no context to carry: nothing goes on the wire.
        assert_eq!(SpanParent::of(&tracing::info_span!("untraced")), None);
    }

    #[test]
    fn off_means_no_provider_and_a_bad_endpoint_is_an_error() {
        let off = TracesConfig {
            endpoint: None,
            service_name: "test",
            instance: "i".into(),
            sample_ratio: 1.0,
            attributes: vec![],
        };
        assert!(provider(&off).expect("off is valid").is_none());
        let bad = TracesConfig {
            endpoint: Some("collector:4318".into()),
            ..off.clone()
        };
        assert!(
            provider(&bad)
                .expect_err("an error")
                .to_string()
                .contains("OTLP endpoint")
        );
        let ratio = TracesConfig {
            endpoint: Some("http://127.0.0.1:9".into()),
            sample_ratio: 1.5,
            ..off
        };
        assert!(
            provider(&ratio)
                .expect_err("an error")
                .to_string()
                .contains("sample ratio")
        );
    }
}
