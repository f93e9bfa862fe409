//! The operator's one error type. Each variant maps to a metric label, so failures are counted
//! by cause.
use x0tta6bl4_api::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error while {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("invalid spec: {}", x0tta6bl4_api::join_field_errors(.0))]
    InvalidSpec(Vec<FieldError>),
    #[error("mesh authority: {0}")]
    Authority(String),
    #[error("leadership lost: {0}")]
    LeadershipLost(String),
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    #[error("could not serialize {what}: {source}")]
    Serialization {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Label of this error in `x0_reconcile_errors_total{cause=...}`.
    pub fn cause(&self) -> &'static str {
        match self {
            Error::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.code == 409 => "conflict",
            Error::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.code == 403 => "forbidden",
            Error::Kube {
                source: kube::Error::Api(_),
                ..
            } => "api",
            Error::Kube { .. } => "transport",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::MissingObjectKey(_) => "missing_key",
            Error::LeadershipLost(_) => "leadership_lost",
            Error::Authority(_) => "authority",
            Error::Serialization { .. } => "serialization",
        }
    }

    /// Wraps a kube error with what the operator was doing.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
