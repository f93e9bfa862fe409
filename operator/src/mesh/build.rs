//! Desired child objects of a MeshNetwork, built from its spec alone (pure, no IO).
use std::collections::BTreeMap;

use crate::agent_pods::selector_labels;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe,
    SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use x0tta6bl4_api::agent_config::{AgentConfig, CONFIG_FILE};
use x0tta6bl4_api::mesh_network::DEFAULT_AGENT_IMAGE;
use x0tta6bl4_api::{FieldError, MeshNetwork};

/// Annotation carrying the hash of the desired object, so an unchanged child is not re-applied.
pub const DESIRED_HASH: &str = "x0tta6bl4.io/desired-hash";
/// Pod-template annotation with the config hash, so a config change rolls the agents.
pub const CONFIG_HASH: &str = "x0tta6bl4.io/config-hash";
pub use x0tta6bl4_api::mesh_node::MESH_LABEL;
pub const MANAGED_BY: &str = "x0tta6bl4-operator";
/// Where the agent keeps its key pair on the node, per mesh, so a restarted agent keeps its identity.
pub const KEY_DIR_ROOT: &str = "/var/lib/x0tta6bl4";
const CONFIG_DIR: &str = "/etc/x0tta6bl4";

/// Everything the operator applies for one MeshNetwork.
#[derive(Debug, Clone)]
pub struct Children {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub config_map: ConfigMap,
    pub daemon_set: DaemonSet,
    pub service: Service,
    /// Hash of the rendered agent configuration.
    pub config_hash: String,
}

/// Options that come from the operator's flags rather than from the MeshNetwork.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Agent image for meshes whose spec names none (the operator's `--agent-image`).
    pub default_agent_image: Option<String>,
    /// The collector agents export spans to (the operator's `--agent-otlp-endpoint`); none:
    /// agents export no spans.
    pub agent_otlp_endpoint: Option<String>,
}

/// Name shared by the agent's ServiceAccount, Role, RoleBinding, DaemonSet and Service.
pub fn agent_name(mesh: &str) -> String {
    format!("{mesh}-agent")
}

pub fn config_map_name(mesh: &str) -> String {
    format!("{mesh}-agent-config")
}

fn labels(mesh: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(mesh);
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    labels.insert("app.kubernetes.io/part-of".into(), "x0tta6bl4".into());
    labels.insert(MESH_LABEL.into(), mesh.into());
    labels
}

/// Builds every child of `mesh`. The mesh must carry a name, namespace and UID (it came from
/// the API server), which the owner references need, and a spec that validated (the agent
/// configuration parses its durations, and refuses one that does not, naming the field).
pub fn build(
    mesh: &MeshNetwork,
    options: &BuildOptions,
    authority_public_key: &str,
) -> Result<Children, FieldError> {
    let name = mesh.name_any();
    let namespace = mesh.namespace().unwrap_or_default();
    let spec = &mesh.spec;
    let owner = owner_reference(mesh);
    let meta = |object_name: String| ObjectMeta {
        name: Some(object_name),
        namespace: Some(namespace.clone()),
        labels: Some(labels(&name)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };

    let config = AgentConfig::render(&name, &namespace, spec, authority_public_key)?;
    let config_text = serde_json::to_string_pretty(&config).expect("agent config serializes");
    let config_hash = short_hash(config_text.as_bytes());

    let service_account = ServiceAccount {
        metadata: meta(agent_name(&name)),
        // Agents talk to the API server with this token; nothing else in the pod needs it.
        automount_service_account_token: Some(true),
        ..Default::default()
    };

    let role = Role {
        metadata: meta(agent_name(&name)),
        rules: Some(agent_rules(&name)),
    };

    let role_binding = RoleBinding {
        metadata: meta(agent_name(&name)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: agent_name(&name),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: agent_name(&name),
            namespace: Some(namespace.clone()),
            ..Default::default()
        }]),
    };

    let config_map = ConfigMap {
        metadata: meta(config_map_name(&name)),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_owned(), config_text)])),
        ..Default::default()
    };

    let image = spec
        .agent
        .image
        .clone()
        .or_else(|| options.default_agent_image.clone())
        .unwrap_or_else(|| DEFAULT_AGENT_IMAGE.to_owned());
    let daemon_set = DaemonSet {
        metadata: meta(agent_name(&name)),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..Default::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                // A percentage keeps a 1000-node rollout moving while 90% of the mesh stays up.
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::String("10%".into())),
                    max_surge: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&name)),
                    annotations: Some(BTreeMap::from([
                        (CONFIG_HASH.to_owned(), config_hash.clone()),
                        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
                        (
                            "prometheus.io/port".to_owned(),
                            spec.agent.metrics_port.to_string(),
                        ),
                    ])),
                    ..Default::default()
                }),
                spec: Some(agent_pod_spec(&name, mesh, image, options)),
            },
            ..Default::default()
        }),
        ..Default::default()
    };

    let service = Service {
        metadata: meta(agent_name(&name)),
        spec: Some(ServiceSpec {
            // Headless: Prometheus scrapes every agent, not one behind a virtual IP.
            cluster_ip: Some("None".into()),
            selector: Some(selector_labels(&name)),
            ports: Some(vec![ServicePort {
                name: Some("metrics".into()),
                port: spec.agent.metrics_port,
                target_port: Some(IntOrString::String("metrics".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };

    let mut children = Children {
        service_account,
        role,
        role_binding,
        config_map,
        daemon_set,
        service,
        config_hash,
    };
    stamp_hashes(&mut children);
    Ok(children)
}

fn owner_reference(mesh: &MeshNetwork) -> OwnerReference {
    mesh.controller_owner_ref(&())
        .expect("a MeshNetwork from the API server has a name and UID")
}

/// What an agent may do, and nothing more: publish its own MeshNode record, read its mesh and
/// its configuration, and record events.
fn agent_rules(mesh: &str) -> Vec<PolicyRule> {
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str], names: Option<Vec<String>>| PolicyRule {
        api_groups: Some(groups.iter().map(|s| (*s).to_owned()).collect()),
        resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        resource_names: names,
        ..Default::default()
    };
    vec![
        rule(
            &["x0tta6bl4.io"],
            &["meshnodes"],
            &["get", "list", "watch", "create", "patch", "update"],
            None,
        ),
        rule(
            &["x0tta6bl4.io"],
            &["meshnodes/status"],
            &["get", "patch", "update"],
            None,
        ),
        rule(
            &["x0tta6bl4.io"],
            &["meshnetworks"],
            &["get", "list", "watch"],
            Some(vec![mesh.to_owned()]),
        ),
        rule(
            &[""],
            &["configmaps"],
            &["get", "list", "watch"],
            Some(vec![config_map_name(mesh)]),
        ),
        // Federated jobs: the aggregator agent reads the job and writes one ConfigMap per
        // round (RBAC cannot limit create by name; the names are the job's, see fl_protocol).
        rule(
            &["x0tta6bl4.io"],
            &["fltrainingrounds"],
            &["get", "list", "watch"],
            None,
        ),
        rule(
            &[""],
            &["configmaps"],
            &["get", "list", "watch", "create", "patch", "update"],
            None,
        ),
        // Chaos experiments: agents read the fault entries and window the operator writes
        // into each experiment's status, and nothing else of them.
        rule(
            &["x0tta6bl4.io"],
            &["chaosexperiments"],
            &["get", "list", "watch"],
            None,
        ),
        rule(&["events.k8s.io"], &["events"], &["create", "patch"], None),
    ]
}

fn agent_pod_spec(name: &str, mesh: &MeshNetwork, image: String, options: &BuildOptions) -> PodSpec {
    let spec = &mesh.spec;
    let field_env = |env: &str, path: &str| EnvVar {
        name: env.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let port = |port_name: &str, port: i32, protocol: &str| ContainerPort {
        name: Some(port_name.into()),
        container_port: port,
        host_port: Some(port),
        protocol: Some(protocol.into()),
        ..Default::default()
    };
    let http_probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    };
    let host_path = |volume: &str, path: String, kind: &str| Volume {
        name: volume.into(),
        host_path: Some(HostPathVolumeSource {
            path,
            type_: Some(kind.into()),
        }),
        ..Default::default()
    };
    // The SPIFFE Workload API socket's directory (SPIRE's agent socket on the node), read-only,
    // at the same path: the agent config names the socket by that path.
    let spiffe_dir = spec
        .identity
        .workload_api_socket
        .as_deref()
        .and_then(|socket| std::path::Path::new(socket).parent())
        .map(|dir| dir.to_string_lossy().into_owned())
        .filter(|dir| dir != "/");
    let mut volume_mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "bpffs".into(),
            mount_path: "/sys/fs/bpf".into(),
            mount_propagation: Some("HostToContainer".into()),
            ..Default::default()
        },
        VolumeMount {
            name: "keys".into(),
            mount_path: KEY_DIR_ROOT.into(),
            ..Default::default()
        },
    ];
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(name),
                ..Default::default()
            }),
            ..Default::default()
        },
        host_path("bpffs", "/sys/fs/bpf".into(), "DirectoryOrCreate"),
        // The agent keeps its key under <root>/<namespace>/<mesh>, so one node can serve
        // several meshes without their keys meeting.
        host_path("keys", KEY_DIR_ROOT.to_owned(), "DirectoryOrCreate"),
    ];
    if let Some(dir) = spiffe_dir {
        volume_mounts.push(VolumeMount {
            name: "spiffe-workload-api".into(),
            mount_path: dir.clone(),
            read_only: Some(true),
            ..Default::default()
        });
        // "Directory": SPIRE's agent creates it; the pod waits rather than making an empty one.
        volumes.push(host_path("spiffe-workload-api", dir, "Directory"));
    }
    PodSpec {
        service_account_name: Some(agent_name(name)),
        // The mesh runs between nodes, so agents use the node's own network stack and address.
        host_network: Some(true),
        dns_policy: Some("ClusterFirstWithHostNet".into()),
        node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
        tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
        termination_grace_period_seconds: Some(10),
        containers: vec![Container {
            name: "agent".into(),
            image: Some(image),
            image_pull_policy: Some(spec.agent.image_pull_policy.as_str().into()),
            args: Some(vec!["--config".into(), format!("{CONFIG_DIR}/{CONFIG_FILE}")]),
            env: Some(
                [
                    field_env("NODE_NAME", "spec.nodeName"),
                    field_env("POD_NAMESPACE", "metadata.namespace"),
                    field_env("POD_NAME", "metadata.name"),
                    // The address peers dial: the node's, since agents use the host network.
                    field_env("X0_ADVERTISE_ADDRESS", "status.hostIP"),
                ]
                .into_iter()
                .chain(options.agent_otlp_endpoint.iter().map(|endpoint| EnvVar {
                    name: "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                    value: Some(endpoint.clone()),
                    ..Default::default()
                }))
                .collect(),
            ),
            ports: Some(vec![
                port("mesh-udp", spec.agent.udp_port, "UDP"),
                port("mesh-tcp", spec.agent.tcp_port, "TCP"),
                port("metrics", spec.agent.metrics_port, "TCP"),
            ]),
            resources: Some(spec.agent.resources.clone()),
            liveness_probe: Some(http_probe("/healthz", 10)),
            readiness_probe: Some(http_probe("/readyz", 5)),
            security_context: Some(SecurityContext {
                // Exactly what loading and attaching tc eBPF programs needs; no privileged mode.
                capabilities: Some(Capabilities {
                    add: Some(
                        ["BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"]
                            .map(String::from)
                            .to_vec(),
                    ),
                    drop: Some(vec!["ALL".into()]),
                }),
                privileged: Some(false),
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                ..Default::default()
            }),
            volume_mounts: Some(volume_mounts),
            ..Default::default()
        }],
        volumes: Some(volumes),
        ..Default::default()
    }
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// Sets [`DESIRED_HASH`] on every child to the hash of its desired content.
fn stamp_hashes(children: &mut Children) {
    fn stamp<K: Resource + serde::Serialize>(object: &mut K) {
        let hash = short_hash(&serde_json::to_vec(object).expect("child serializes"));
        object
            .meta_mut()
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(DESIRED_HASH.into(), hash);
    }
    stamp(&mut children.service_account);
    stamp(&mut children.role);
    stamp(&mut children.role_binding);
    stamp(&mut children.config_map);
    stamp(&mut children.daemon_set);
    stamp(&mut children.service);
}

/// The desired hash recorded on a live or desired object.
pub fn desired_hash<K: Resource>(object: &K) -> Option<&str> {
    object
        .meta()
        .annotations
        .as_ref()?
        .get(DESIRED_HASH)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(yaml: &str) -> MeshNetwork {
        let mut mesh: MeshNetwork = serde_norway::from_str(yaml).expect("fixture parses");
        mesh.metadata.uid = Some("0b5c9a4e-0000-4000-8000-000000000001".into());
        mesh
    }

    const AUTHORITY: &str = "YXV0aG9yaXR5";

    const DEMO: &str = r#"
apiVersion: x0tta6bl4.io/v1alpha1
kind: MeshNetwork
metadata: {name: demo, namespace: team-a}
spec:
  nodeSelector: {type: kwok}
  tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
  agent: {image: "x0tta6bl4/node-agent:dev", udpPort: 5000}
"#;

    #[test]
    fn the_daemon_set_runs_on_the_host_network_with_only_the_capabilities_ebpf_needs() {
        let children = build(&mesh(DEMO), &BuildOptions::default(), AUTHORITY).unwrap();
        let pod = children
            .daemon_set
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap();
        assert_eq!(pod.host_network, Some(true));
        let container = &pod.containers[0];
        let caps = container
            .security_context
            .as_ref()
            .unwrap()
            .capabilities
            .as_ref()
            .unwrap();
        assert_eq!(
            caps.add.as_ref().unwrap(),
            &["BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"]
        );
        assert_eq!(caps.drop.as_ref().unwrap(), &["ALL"]);
        assert_eq!(
            container.security_context.as_ref().unwrap().privileged,
            Some(false)
        );
        let mounts: Vec<_> = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(mounts.contains(&"/sys/fs/bpf"));
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("kwok.x-k8s.io/node")
        );
        assert_eq!(pod.node_selector.as_ref().unwrap()["type"], "kwok");
        assert_eq!(container.image.as_deref(), Some("x0tta6bl4/node-agent:dev"));
        assert_eq!(container.ports.as_ref().unwrap()[0].host_port, Some(5000));
    }

    #[test]
    fn every_child_is_owned_by_the_mesh_and_labelled_with_it() {
        let children = build(&mesh(DEMO), &BuildOptions::default(), AUTHORITY).unwrap();
        let metas = [
            &children.service_account.metadata,
            &children.role.metadata,
            &children.role_binding.metadata,
            &children.config_map.metadata,
            &children.daemon_set.metadata,
            &children.service.metadata,
        ];
        for meta in metas {
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str()),
                ("MeshNetwork", "demo")
            );
            assert_eq!(owner.controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("team-a"));
            assert_eq!(meta.labels.as_ref().unwrap()[MESH_LABEL], "demo");
            assert!(meta.annotations.as_ref().unwrap().contains_key(DESIRED_HASH));
        }
    }

    #[test]
    fn the_agent_role_grants_only_its_own_mesh_and_config() {
        let children = build(&mesh(DEMO), &BuildOptions::default(), AUTHORITY).unwrap();
        let rules = children.role.rules.unwrap();
        let mesh_rule = rules
            .iter()
            .find(|r| r.resources.as_ref().unwrap()[0] == "meshnetworks")
            .unwrap();
        assert_eq!(mesh_rule.resource_names.as_ref().unwrap(), &["demo"]);
        assert!(!mesh_rule.verbs.iter().any(|v| v == "update" || v == "delete"));
        let cm_rule = rules
            .iter()
            .find(|r| r.resources.as_ref().unwrap()[0] == "configmaps")
            .unwrap();
        assert_eq!(cm_rule.resource_names.as_ref().unwrap(), &["demo-agent-config"]);
        assert!(
            rules
                .iter()
                .all(|r| !r.verbs.iter().any(|v| v == "*" || v == "delete"))
        );
        let chaos_rule = rules
            .iter()
            .find(|r| r.resources.as_ref().unwrap()[0] == "chaosexperiments")
            .unwrap();
        assert_eq!(chaos_rule.verbs, ["get", "list", "watch"], "read-only");
        assert_eq!(
            chaos_rule.resources.as_ref().unwrap().len(),
            1,
            "not their status"
        );
    }

    #[test]
    fn the_config_map_carries_the_rendered_config_and_its_hash_rolls_the_pods() {
        let before = build(&mesh(DEMO), &BuildOptions::default(), AUTHORITY).unwrap();
        let config = AgentConfig::parse(&before.config_map.data.as_ref().unwrap()[CONFIG_FILE]).unwrap();
        assert_eq!((config.mesh.as_str(), config.udp_port), ("demo", 5000));
        assert_eq!(config.authority_public_key, AUTHORITY);
        let changed = build(
            &mesh(&DEMO.replace("udpPort: 5000", "udpPort: 5001")),
            &BuildOptions::default(),
            AUTHORITY,
        )
        .unwrap();
        let hash = |c: &Children| {
            c.daemon_set
                .spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[CONFIG_HASH]
                .clone()
        };
        assert_ne!(hash(&before), hash(&changed));
        assert_ne!(
            desired_hash(&before.daemon_set),
            desired_hash(&changed.daemon_set)
        );
        assert_eq!(
            desired_hash(&before.service_account),
            desired_hash(&changed.service_account)
        );
    }

    #[test]
    fn building_twice_gives_identical_hashes() {
        let a = build(&mesh(DEMO), &BuildOptions::default(), AUTHORITY).unwrap();
        let b = build(&mesh(DEMO), &BuildOptions::default(), AUTHORITY).unwrap();
        assert_eq!(desired_hash(&a.daemon_set), desired_hash(&b.daemon_set));
        assert_eq!(a.config_hash, b.config_hash);
    }

    #[test]
    fn the_operator_image_applies_only_where_the_spec_names_none() {
        let options = BuildOptions {
            default_agent_image: Some("local/agent:dev".into()),
            ..Default::default()
        };
        let image = |m: &MeshNetwork| agent_container(m, &options).image.unwrap();
        let minimal = mesh(
            "apiVersion: x0tta6bl4.io/v1alpha1\nkind: MeshNetwork\nmetadata: {name: m, namespace: n}\nspec: {}",
        );
        assert_eq!(image(&minimal), "local/agent:dev");
        assert_eq!(image(&mesh(DEMO)), "x0tta6bl4/node-agent:dev");
        assert_eq!(
            agent_container(&minimal, &BuildOptions::default())
                .image
                .as_deref(),
            Some(DEFAULT_AGENT_IMAGE)
        );
    }

    /// The pod spec of the DaemonSet built for `mesh`.
    fn agent_pod(mesh: &MeshNetwork, options: &BuildOptions) -> PodSpec {
        build(mesh, options, AUTHORITY)
            .unwrap()
            .daemon_set
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
    }

    /// The agent container of the DaemonSet built for `mesh`.
    fn agent_container(mesh: &MeshNetwork, options: &BuildOptions) -> k8s_openapi::api::core::v1::Container {
        agent_pod(mesh, options).containers.remove(0)
    }

    #[test]
    fn agents_export_spans_only_where_the_operator_names_a_collector() {
        let otlp_env = |options: &BuildOptions| {
            let env = agent_container(&mesh(DEMO), options).env.unwrap_or_default();
            env.into_iter()
                .filter(|e| e.name.starts_with("OTEL_"))
                .map(|e| (e.name, e.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(otlp_env(&BuildOptions::default()), vec![]);
        let traced = BuildOptions {
            agent_otlp_endpoint: Some("http://collector:4318".into()),
            ..Default::default()
        };
        assert_eq!(
            otlp_env(&traced),
            vec![(
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                Some("http://collector:4318".to_owned())
            )]
        );
    }

    #[test]
    fn agents_mount_the_workload_api_socket_directory_read_only_only_when_the_mesh_names_one() {
        let spiffe_mount = |mesh: &MeshNetwork| {
            agent_container(mesh, &BuildOptions::default())
                .volume_mounts
                .unwrap_or_default()
                .into_iter()
                .find(|m| m.name == "spiffe-workload-api")
                .map(|m| (m.mount_path, m.read_only))
        };
        assert_eq!(spiffe_mount(&mesh(DEMO)), None);
        let mut with_spire = mesh(DEMO);
        with_spire.spec.identity.workload_api_socket = Some("/run/spire/sockets/agent.sock".into());
        assert_eq!(
            spiffe_mount(&with_spire),
            Some(("/run/spire/sockets".to_owned(), Some(true)))
        );
        let volumes = agent_pod(&with_spire, &BuildOptions::default()).volumes.unwrap();
        let host = volumes
            .iter()
            .find(|v| v.name == "spiffe-workload-api")
            .and_then(|v| v.host_path.clone())
            .unwrap();
        assert_eq!(
            (host.path.as_str(), host.type_.as_deref()),
            ("/run/spire/sockets", Some("Directory"))
        );
    }
}
