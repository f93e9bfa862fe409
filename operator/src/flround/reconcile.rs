//! One reconcile of an FLTrainingRound: validate and place the job ([`plan::stage`]) → read
//! what that needs ([`observe`]) → [`plan`] (pure) → write the seals it lists ([`apply`]) →
//! write the status built from it ([`status`]) if it changed → Events.
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use x0tta6bl4_api::FLTrainingRound;

use super::plan::{self, Decision, Plan};
use super::{apply, observe, status};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::status_write::apply_status;

const KIND: &str = "FLTrainingRound";

pub async fn reconcile(job: Arc<FLTrainingRound>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    if job.meta().deletion_timestamp.is_some() {
        // The round ConfigMaps are owned by the job; the agents stop when it is gone.
        return Ok(Action::await_change());
    }
    let namespace = job
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = job.name_any();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let observed = observe::read(&ctx, &job, &namespace, &plan::stage(&job)).await?;
    let planned = plan::plan(&job, &observed, &now);
    log(&name, &planned);
    apply::write_seals(&ctx, &namespace, &name, &planned.seals).await?;
    ctx.metrics
        .rounds_sealed(planned.seals.iter().map(|seal| &seal.sealed));
    let (new_status, transitions) = status::compute(&job, &planned, &now);
    if job.status.as_ref() != Some(&new_status) {
        apply_status(&ctx, job.as_ref(), &new_status).await?;
        if matches!(planned.decision, Decision::Completed | Decision::RoundFailed(_)) {
            crate::traces::record_finished(
                KIND,
                job.as_ref(),
                &new_status.phase,
                vec![
                    ("fl.rounds_completed", new_status.completed_rounds.to_string()),
                    ("fl.accuracy", new_status.accuracy.clone()),
                    ("fl.aggregator", new_status.aggregator.clone()),
                ],
            );
        }
    }
    ctx.publish_transitions(&job.object_ref(&()), &transitions).await;
    ctx.reset_backoff(&ObjectRef::from_obj(job.as_ref()));
    Ok(planned
        .decision
        .requeue()
        .map_or_else(Action::await_change, Action::requeue))
}

/// Logs what a plan changes in the job's life.
fn log(job: &str, planned: &Plan) {
    let progress = &planned.progress;
    match &planned.decision {
        Decision::Started => {
            let message = format!(
                "{} participants, aggregated by {}",
                progress.participants.len(),
                progress.aggregator
            );
            tracing::info!(%job, %message, "federated job started");
        }
        Decision::RoundFailed(message) => tracing::warn!(%job, %message, "federated job failed"),
        _ => {}
    }
    for change in &planned.replaced {
        tracing::warn!(%job, %change, "federated job: aggregator replaced");
    }
}

#[cfg(test)]
mod tests {
    //! One reconcile against a mock API server that records every request. The real behaviour
    //! against kube-apiserver and agents is the e2e suite's.
    use x0tta6bl4_api::fl_protocol::SEALED_KEY;

    use super::super::plan::tests::{mk_job, mk_mesh, mk_round, running};
    use super::super::plan::{COMPLETED, FAILED, Observed};
    use super::*;
    use crate::testing::{self, MockApi};

    const GET_MESH: &str = "GET /apis/x0tta6bl4.io/v1alpha1/namespaces/ns/meshnetworks/demo";
    const LIST_RECORDS: &str = "GET /apis/x0tta6bl4.io/v1alpha1/namespaces/ns/meshnodes";
    const LIST_ROUNDS: &str = "GET /api/v1/namespaces/ns/configmaps";
    const STATUS: &str = "PATCH /apis/x0tta6bl4.io/v1alpha1/namespaces/ns/fltrainingrounds/job/status";

    /// Serves `job`, the mesh "demo" when `observed` found it, with its records and the job's
    /// round ConfigMaps.
    fn mock_api(job: &FLTrainingRound, observed: &Observed) -> (kube::Client, MockApi) {
        let mesh = observed.mesh_found.then(|| {
            serde_json::json!({"apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "MeshNetwork",
                "metadata": {"name": "demo", "namespace": "ns"}, "spec": {}})
        });
        let records = testing::list("x0tta6bl4.io/v1alpha1", "MeshNodeList", &observed.records);
        let maps = testing::list("v1", "ConfigMapList", &observed.round_maps);
        let mut routes = vec![
            ("/meshnodes", records),
            ("/configmaps", maps),
            ("/fltrainingrounds/job/status", serde_json::to_value(job).unwrap()),
        ];
        routes.extend(mesh.map(|mesh| ("/meshnetworks/demo", mesh)));
        MockApi::serve_suffixes(routes)
    }

    /// `job` with the status a reconcile would write after reading `observed` now.
    fn settled(mut job: FLTrainingRound, observed: &Observed) -> FLTrainingRound {
        let now = now();
        job.status = Some(status::compute(&job, &plan::plan(&job, observed, &now), &now).0);
        job
    }

    async fn reconcile_once(job: FLTrainingRound, observed: &Observed) -> (Action, MockApi) {
        let (client, api) = mock_api(&job, observed);
        let action = reconcile(Arc::new(job), testing::context(client))
            .await
            .expect("reconcile succeeds");
        (action, api)
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::now())
    }

    /// A live mesh whose aggregator wrote round 1 of the job.
    fn one_round() -> Observed {
        let mut observed = mk_mesh(&now());
        observed.round_maps = vec![mk_round(1, None)];
        observed
    }

    /// The same, with round 1 sealed by the operator.
    fn one_round_sealed() -> Observed {
        let mut observed = one_round();
        let seal = plan::plan(&mk_job(3, Some(running())), &observed, &now())
            .seals
            .remove(0);
        let sealed = serde_json::to_string(&seal.sealed).unwrap();
        observed.round_maps[0]
            .data
            .get_or_insert_default()
            .insert(SEALED_KEY.into(), sealed);
        observed
    }

    #[tokio::test]
    async fn an_unchanged_running_job_is_read_and_never_written() {
        let observed = one_round_sealed();
        let job = settled(mk_job(3, Some(running())), &observed);
        assert_eq!(job.status.as_ref().unwrap().completed_rounds, 1);
        let (action, api) = reconcile_once(job, &observed).await;
        assert_eq!(action, Action::requeue(plan::RUNNING_RETRY));
        assert_eq!(api.write_lines(), Vec::<String>::new());
        assert_eq!(api.read_lines(), [GET_MESH, LIST_RECORDS, LIST_ROUNDS]);
    }

    #[tokio::test]
    async fn a_new_round_is_sealed_before_the_status_that_counts_it() {
        let (_, api) = reconcile_once(mk_job(3, Some(running())), &one_round()).await;
        let writes = api.write_lines();
        assert_eq!(
            writes[..2],
            [
                "PATCH /api/v1/namespaces/ns/configmaps/job-round-1".to_owned(),
                STATUS.to_owned()
            ]
        );
        // Then one Event per new condition.
        assert_eq!(writes.len(), 5, "{writes:#?}");
    }

    #[tokio::test]
    async fn a_round_sealed_is_counted_once() {
        let observed = one_round();
        let (client, _api) = mock_api(&mk_job(3, Some(running())), &observed);
        let ctx = testing::context(client);
        reconcile(Arc::new(mk_job(3, Some(running()))), ctx.clone())
            .await
            .expect("reconcile succeeds");
        assert_eq!(ctx.metrics.fl_rounds_sealed.get(), 1);
        assert_eq!(ctx.metrics.fl_round_duration.get_sample_count(), 1);
        // Sealed already: the next reconcile takes the seal as it is, and counts nothing.
        let sealed = one_round_sealed();
        let job = settled(mk_job(3, Some(running())), &sealed);
        let (client, _api) = mock_api(&job, &sealed);
        let again = testing::context(client);
        reconcile(Arc::new(job), again.clone())
            .await
            .expect("reconcile succeeds");
        assert_eq!(again.metrics.fl_rounds_sealed.get(), 0);
    }

    #[tokio::test]
    async fn a_job_waiting_for_its_mesh_looks_again_without_writing() {
        let observed = Observed::default();
        let job = settled(mk_job(3, None), &observed);
        let (action, api) = reconcile_once(job, &observed).await;
        assert_eq!(action, Action::requeue(plan::WAITING_RETRY));
        assert_eq!(api.write_lines(), Vec::<String>::new());
        assert_eq!(api.read_lines(), [GET_MESH]);
    }

    #[tokio::test]
    async fn a_finished_or_refused_job_is_neither_read_nor_written() {
        let completed = settled(mk_job(1, Some(running())), &one_round_sealed());
        let mut failure = one_round_sealed();
        failure
            .round_maps
            .push(mk_round(2, Some("2 updates arrived, median needs 3")));
        let failed = settled(mk_job(3, Some(running())), &failure);
        let mut invalid = mk_job(3, None);
        invalid.spec.learning_rate = "0".into();
        let refused = settled(invalid, &Observed::default());
        let phases = |job: &FLTrainingRound| {
            let status = job.status.as_ref().unwrap();
            let ready = x0tta6bl4_api::condition::find(&status.conditions, "Ready").unwrap();
            (status.phase.clone(), ready.reason.clone())
        };
        assert_eq!(phases(&completed), (COMPLETED.into(), "Completed".into()));
        assert_eq!(phases(&failed), (FAILED.into(), "RoundFailed".into()));
        assert_eq!(phases(&refused), (FAILED.into(), "InvalidSpec".into()));
        for job in [completed, failed, refused] {
            let (action, api) = reconcile_once(job, &Observed::default()).await;
            assert_eq!(action, Action::await_change());
            assert_eq!(api.requests(), Vec::new());
        }
    }
}
