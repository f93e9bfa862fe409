//! Helpers shared by the e2e tests: a client of the local cluster, one namespace per test,
//! operator processes the tests start and kill, `kubectl` as users run it, and agents started
//! as the agent pods of the cluster's nodes. Starting agent processes, waiting on conditions
//! with deadlines (never fixed sleeps) and reading /metrics come from `x0tta6bl4-testsupport`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use x0tta6bl4_testsupport::process::{self, AgentSpec};
use x0tta6bl4_testsupport::status::metric_sum_with;

pub use x0tta6bl4_api as api;
pub use x0tta6bl4_testsupport::http::request as http_request;
pub use x0tta6bl4_testsupport::{free_port, metric_sum, wait_until};

/// Root of the repository (examples, crds, charts live here).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// A client of the cluster named by KUBECONFIG (set by e2e/run.sh).
pub async fn client() -> Client {
    Client::try_default()
        .await
        .expect("KUBECONFIG points at the e2e cluster (run through `make e2e`)")
}

/// A path the e2e runner exports (binaries, tools).
pub fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by e2e/run.sh")))
}

/// Runs kubectl as a user would, against the e2e cluster.
pub fn kubectl(args: &[&str]) -> Output {
    Command::new(env_path("X0_KUBECTL"))
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// Runs kubectl and fails the test with its stderr if it fails.
pub fn kubectl_ok(args: &[&str]) -> String {
    x0tta6bl4_testsupport::run(
        Command::new(env_path("X0_KUBECTL")).args(args),
        &format!("kubectl {args:?} failed"),
    )
}

/// Runs helm against the e2e cluster.
pub fn helm(args: &[&str]) -> Output {
    Command::new(env_path("X0_HELM"))
        .args(args)
        .output()
        .expect("helm runs")
}

/// A namespace of its own for one test, deleted when the test ends.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", std::process::id() % 100_000);
        let api: Api<Namespace> = Api::all(client.clone());
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &namespace)
            .await
            .expect("namespace created");
        Self {
            name,
            client: client.clone(),
        }
    }
}

impl TestNamespace {
    /// Deletes the namespace and waits until it is gone, so the agents' host ports on the fake
    /// nodes are free for the next test.
    pub async fn delete_and_wait(self) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let _ = api.delete(&self.name, &DeleteParams::background()).await;
        let name = self.name.clone();
        wait_until(
            &format!("namespace {name} deleted"),
            Duration::from_secs(120),
            || async { api.get_opt(&name).await.ok().flatten().is_none() },
            |gone| *gone,
        )
        .await;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = self.name.clone();
        // Drop cannot await; the namespace controller finishes the deletion on its own.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = api.delete(&name, &DeleteParams::background()).await;
            });
        }
    }
}

/// Gets an object, or None when it does not exist.
pub async fn get_opt<K>(api: &Api<K>, name: &str) -> Option<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.expect("API reachable")
}

/// An operator process started by a test, killed when dropped.
pub struct Operator {
    child: Child,
    pub metrics_port: u16,
    pub identity: String,
    log: PathBuf,
}

impl Operator {
    /// Starts `x0tta6bl4-operator run` with leader election on the given Lease.
    pub async fn start(identity: &str, lease: &str) -> anyhow::Result<Self> {
        let metrics_port = free_port()?;
        let log = std::env::temp_dir().join(format!("x0-e2e-operator-{identity}.log"));
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(env_path("X0_OPERATOR_BIN"))
            .args(["run", "--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args([
                "--leader-election-namespace",
                "default",
                "--leader-election-id",
                lease,
                "--identity",
                identity,
            ])
            .args(["--agent-image", "x0tta6bl4/node-agent:e2e"])
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("starting the operator (X0_OPERATOR_BIN)")?;
        let operator = Self {
            child,
            metrics_port,
            identity: identity.to_owned(),
            log,
        };
        let serving = x0tta6bl4_testsupport::try_wait_until(
            &format!("operator {identity} to serve /healthz"),
            Duration::from_secs(20),
            Duration::from_millis(100),
            || async move {
                http_get(metrics_port, "/healthz")
                    .await
                    .map_err(|error| error.to_string())
            },
        )
        .await;
        if let Err(timed_out) = serving {
            bail!("{timed_out}: {}", operator.log_tail());
        }
        Ok(operator)
    }

    /// Waits until this replica leads and its caches are synced (/readyz 200).
    pub async fn wait_ready(&self, timeout: Duration) {
        let port = self.metrics_port;
        wait_until(
            &format!("operator {} ready", self.identity),
            timeout,
            || async move { http_get(port, "/readyz").await.unwrap_or_default() },
            |body| body.starts_with("HTTP/1.1 200"),
        )
        .await;
    }

    /// Sum of a metric over all its label sets (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let body = http_get(self.metrics_port, "/metrics").await.unwrap_or_default();
        metric_sum(&body, name)
    }

    /// Sum of a metric over the label sets that contain `label` (for example `kind="DaemonSet"`).
    pub async fn metric_with(&self, name: &str, label: &str) -> f64 {
        let body = http_get(self.metrics_port, "/metrics").await.unwrap_or_default();
        metric_sum_with(&body, name, label)
    }

    /// Kills the process at once (SIGKILL), as a node failure would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_tail(&self) -> String {
        process::log_tail(&self.log, process::LOG_TAIL_LINES)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `x0tta6bl4-operator` with `args` (a command such as `verify-chain` or `get-model`):
/// whether it succeeded, and what it printed (stdout, then stderr).
pub fn operator_command(args: &[&str]) -> (bool, String) {
    let output = Command::new(env_path("X0_OPERATOR_BIN"))
        .args(args)
        .output()
        .expect("run x0tta6bl4-operator");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A raw HTTP/1.1 GET on loopback, enough for /metrics and probes.
async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    http_request("127.0.0.1", port, "GET", path).await
}

/// Number of fake nodes in the e2e cluster.
pub fn node_count() -> i32 {
    std::env::var("X0_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
}

/// A node agent process started by a test, authenticating as the agent pod of one node.
pub struct Agent {
    process: x0tta6bl4_testsupport::Agent,
    pub node: String,
}

impl Agent {
    /// Starts `x0tta6bl4-node-agent` for `node` with a kubeconfig carrying a token bound to
    /// `pod`, on loopback address `ip` (each agent its own), with the mesh's rendered config.
    pub fn start(
        node: &str,
        pod: &str,
        namespace: &str,
        ip: &str,
        config: &std::path::Path,
    ) -> anyhow::Result<Self> {
        Self::start_in_mesh("demo", node, pod, namespace, ip, config, &[])
    }

    /// [`Agent::start`] for the agents of mesh `mesh` (its service account), with `extra`
    /// command-line arguments (test settings such as `--test-fault byzantineUpdate=signFlip`,
    /// which the e2e build of the agent has: `e2e/run.sh` turns on its `test-faults` feature).
    pub fn start_in_mesh(
        mesh: &str,
        node: &str,
        pod: &str,
        namespace: &str,
        ip: &str,
        config: &std::path::Path,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("x0-e2e-agent-{namespace}-{node}"));
        std::fs::create_dir_all(&dir)?;
        let token = kubectl_ok(&[
            "create",
            "token",
            &format!("{mesh}-agent"),
            "-n",
            namespace,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            pod,
            "--duration",
            "1h",
        ]);
        let server = kubectl_ok(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ]);
        let ca = kubectl_ok(&[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ]);
        let kubeconfig = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{server}\", certificate-authority-data: \"{ca}\"}}}}]\n\
             users: [{{name: u, user: {{token: \"{}\"}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u, namespace: {namespace}}}}}]\ncurrent-context: x\n",
            token.trim()
        );
        std::fs::write(&kubeconfig, text)?;
        let address: std::net::IpAddr = ip.parse().context("an agent's IP address")?;
        let process = AgentSpec::new(
            env_path("X0_NODE_AGENT_BIN"),
            node,
            config,
            dir.join("state"),
            dir.join("agent.log"),
        )
        .listen((address, 47101).into())
        .advertise(ip)
        .metrics((address, AGENT_STATUS_PORT).into())
        .args(extra.iter().cloned())
        .env("KUBECONFIG", &kubeconfig)
        .spawn()
        .context("starting the node agent (X0_NODE_AGENT_BIN)")?;
        Ok(Self {
            process,
            node: node.to_owned(),
        })
    }

    /// SIGKILL, and reap it (dropping it does the same).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// The agent's whole log (stdout and stderr).
    pub fn log_path(&self) -> &std::path::Path {
        &self.process.log
    }
}

/// The agents of the mesh `demo`, run by a test as local processes.
pub struct DemoAgents {
    pub agents: Vec<Agent>,
    /// Each agent's loopback address (sessions on :47101, /metrics and /status on :47102).
    pub ips: Vec<String>,
    /// The rendered agent configuration they run with.
    pub config: PathBuf,
    /// The DaemonSet pods they authenticate as, in the same order.
    pub pods: Vec<k8s_openapi::api::core::v1::Pod>,
}

/// Waits until the `demo` DaemonSet has a ready pod on every node, then starts one agent per
/// pod on `<subnet>.<i + 1>` with the mesh's rendered configuration.
pub async fn start_demo_agents(
    client: &Client,
    namespace: &str,
    subnet: &str,
    timeout: Duration,
) -> DemoAgents {
    start_mesh_agents(client, namespace, "demo", node_count(), subnet, timeout, |_| {
        Vec::new()
    })
    .await
}

/// Waits until mesh `mesh`'s DaemonSet has `nodes` ready pods, then starts one agent per pod
/// (sorted by node name) on `<subnet>.<i + 1>` with the mesh's rendered configuration and the
/// arguments `extra(node)`.
pub async fn start_mesh_agents(
    client: &Client,
    namespace: &str,
    mesh: &str,
    nodes: i32,
    subnet: &str,
    timeout: Duration,
    extra: impl Fn(&str) -> Vec<String>,
) -> DemoAgents {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use kube::api::ListParams;
    use x0tta6bl4_api::MeshNetwork;

    let meshes: Api<MeshNetwork> = Api::namespaced(client.clone(), namespace);
    wait_until(
        &format!("{mesh}'s DaemonSet pods ready"),
        timeout,
        || async {
            get_opt(&meshes, mesh)
                .await
                .and_then(|m| m.status)
                .map(|s| s.ready_nodes)
        },
        |ready| *ready == Some(nodes),
    )
    .await;
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get(&format!("{mesh}-agent-config"))
        .await
        .expect("the mesh's agent ConfigMap");
    let config = std::env::temp_dir().join(format!("x0-e2e-agents-{namespace}-{mesh}.json"));
    let rendered = config_map
        .data
        .unwrap_or_default()
        .remove("agent.yaml")
        .unwrap_or_default();
    std::fs::write(&config, rendered).expect("write the agent configuration");
    let node_of = |pod: &Pod| {
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default()
    };
    let mut pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={mesh}")))
        .await
        .expect("list the agent pods")
        .items;
    pods.sort_by_key(node_of);
    let ips: Vec<String> = (0..pods.len()).map(|i| format!("{subnet}.{}", i + 1)).collect();
    let agents = pods
        .iter()
        .zip(&ips)
        .map(|(pod, ip)| {
            let node = node_of(pod);
            Agent::start_in_mesh(
                mesh,
                &node,
                pod.metadata.name.as_deref().unwrap_or_default(),
                namespace,
                ip,
                &config,
                &extra(&node),
            )
            .expect("start an agent")
        })
        .collect();
    DemoAgents {
        agents,
        ips,
        config,
        pods,
    }
}

/// Port of the agents' /status and /metrics in the tests that start them on loopback.
pub const AGENT_STATUS_PORT: u16 = 47102;

/// The /status of the agent at `ip` (None when it does not answer).
pub async fn agent_status(ip: &str) -> Option<serde_json::Value> {
    let response = http_request(ip, AGENT_STATUS_PORT, "GET", "/status").await.ok()?;
    let (_, body) = x0tta6bl4_testsupport::http::parse_response(&response)?;
    serde_json::from_str(&body).ok()
}

/// How many routes each agent's /status lists (None where it does not answer).
pub async fn route_counts(ips: &[String]) -> Vec<Option<usize>> {
    let mut counts = Vec::new();
    for ip in ips {
        counts.push(
            agent_status(ip)
                .await
                .and_then(|s| s["routes"].as_array().map(Vec::len)),
        );
    }
    counts
}

/// Fake (kwok) nodes a test adds, deleted when it ends (even on a failure).
pub struct FakeNodes {
    label: String,
}

impl FakeNodes {
    /// Nodes `names`, each labelled `label: "true"`, `type: kwok-<tag>`, its hostname and the
    /// labels `extra` gives it, tainted like the cluster's fake nodes, with InternalIP
    /// `<ip_prefix>.<i + 1>` (a fake address: the agents of these nodes run on loopback and
    /// never dial it).
    pub fn create(
        label: &str,
        tag: &str,
        ip_prefix: &str,
        names: &[String],
        extra: impl Fn(usize) -> Vec<(String, String)>,
    ) -> Self {
        let manifests: String = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let labels: String = extra(i)
                    .iter()
                    .map(|(key, value)| format!("    {key}: \"{value}\"\n"))
                    .collect();
                format!(
                    "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations: {{kwok.x-k8s.io/node: fake}}\n  labels:\n    type: kwok-{tag}\n    {label}: \"true\"\n{labels}    kubernetes.io/hostname: {name}\nspec:\n  taints: [{{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}}]\nstatus:\n  addresses: [{{type: InternalIP, address: {ip_prefix}.{ip}}}, {{type: Hostname, address: {name}}}]\n",
                    ip = i + 1
                )
            })
            .collect();
        let file = std::env::temp_dir().join(format!("x0-e2e-{tag}-nodes.yaml"));
        std::fs::write(&file, manifests).expect("write the fake nodes' manifests");
        kubectl_ok(&["apply", "-f", file.to_str().expect("a UTF-8 temporary path")]);
        FakeNodes {
            label: label.to_owned(),
        }
    }
}

impl Drop for FakeNodes {
    fn drop(&mut self) {
        kubectl(&[
            "delete",
            "nodes",
            "-l",
            &format!("{}=true", self.label),
            "--wait=false",
        ]);
    }
}

/// A MeshNetwork `name` over the fake nodes labelled `label: "true"` (tolerating their taint),
/// post-quantum only, hellos every 100 ms and a neighbour dead after 1 s, with `routing`'s
/// fields over those.
pub fn fake_node_mesh(name: &str, label: &str, routing: serde_json::Value) -> x0tta6bl4_api::MeshNetwork {
    let mut routing_spec = serde_json::json!({"helloInterval": "100ms", "neighbourTimeout": "1s"});
    if let (Some(base), Some(more)) = (routing_spec.as_object_mut(), routing.as_object()) {
        base.extend(more.clone());
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "MeshNetwork", "metadata": {"name": name},
        "spec": {
            "nodeSelector": {label: "true"},
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
            "routing": routing_spec,
            "crypto": {"requirePostQuantum": true},
            "identity": {"trustDomain": "x0tta6bl4.local"}
        }
    }))
    .expect("a valid MeshNetwork")
}
