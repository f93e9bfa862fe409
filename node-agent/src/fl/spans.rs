//! The spans of a federated job: one trace per FLTrainingRound (its UID is the trace id, see
//! `x0tta6bl4_telemetry::ObjectTrace`), in it one `fl.round` span per round on the aggregator,
//! and under each one `fl.train` span per participant, joined through the trace context the
//! aggregator puts in its signed training request.
use x0tta6bl4_fl::codec::train_request::{TraceContext, TrainRequest};
use x0tta6bl4_telemetry::{ObjectTrace, SpanParent};

/// The aggregator's span for `round` of the job `uid` (named `job`), a child of the job's root.
pub fn round(uid: &str, job: &str, round: u32, aggregator: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "fl.round",
        fl_job = %job,
        fl_job_uid = %uid,
        round,
        aggregator = %aggregator,
        accepted = tracing::field::Empty,
        rejected = tracing::field::Empty,
        accuracy = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    if let Some(trace) = ObjectTrace::for_uid(uid) {
        trace.parent().adopt(&span);
    }
    span
}

/// The context a training request carries: the current span's (the round's), if traced.
pub fn request_context() -> Option<TraceContext> {
    SpanParent::of(&tracing::Span::current()).map(|parent| TraceContext {
        trace_id: parent.trace_id,
        span_id: parent.span_id,
        flags: u8::from(parent.sampled),
    })
}

/// A participant's span for training `request`: a child of the aggregator's round span when
/// the request carries it, else of the job's root.
pub fn train(request: &TrainRequest, participant: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "fl.train",
        fl_job_uid = %request.job_uid,
        round = request.round,
        participant = %participant,
        aggregator = %request.aggregator,
        outcome = tracing::field::Empty,
    );
    let parent = match request.trace {
        Some(trace) => Some(SpanParent {
            trace_id: trace.trace_id,
            span_id: trace.span_id,
            sampled: trace.flags & 1 == 1,
        }),
        None => ObjectTrace::for_uid(&request.job_uid).map(|t| t.parent()),
    };
    if let Some(parent) = parent {
        parent.adopt(&span);
    }
    span
}
