//! A ring of network namespaces laid out like the demo's, for the eBPF tests (`netns_ebpf.rs`,
//! `netns_link_telemetry.rs`): each node's own address on `lo`, its two neighbours reached over
//! two different veths (`left`, `right`), and a management veth to the host for /status; and
//! the agents' fault endpoint, reached inside a namespace. Root only.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use super::{Agent, AgentSpec, Namespaces, NodeFiles, ip, management_veth, veth_link};

/// Where the agents serve their fault endpoint (each on its namespace's loopback).
pub const FAULT_API: &str = "127.0.0.1:47190";

/// The namespaces of one run, removed on drop (with them the veths, and the filters on them).
///
/// Addresses (out of the way of netns_ring.rs, which uses .1-.22 of the same /24s):
/// node i's own address 198.18.<tag>.<240+i>/32 on `lo`; link i (node i "right" to node i+1
/// "left") 198.18.<tag>.<128+4i>/30; management 198.19.<tag>.<128+4i>/30 (host .1, node .2).
pub struct Ring {
    pub tag: u32,
    pub namespaces: Namespaces,
}

impl Ring {
    pub fn own(&self, i: usize) -> String {
        format!("198.18.{}.{}", self.tag, 240 + i)
    }

    pub fn right(&self, i: usize) -> String {
        format!("198.18.{}.{}", self.tag, 128 + 4 * i + 1)
    }

    pub fn left_of_next(&self, i: usize) -> String {
        format!("198.18.{}.{}", self.tag, 128 + 4 * i + 2)
    }

    pub fn management(&self, i: usize) -> SocketAddr {
        format!("198.19.{}.{}:9090", self.tag, 128 + 4 * i + 2)
            .parse()
            .unwrap()
    }

    /// A ring of `nodes` namespaces named `<prefix><tag>n<i>`, whose management veths are
    /// `<host_prefix><tag>m<i>` on the host.
    pub fn create(prefix: &str, host_prefix: &str, nodes: usize) -> Ring {
        let tag = std::process::id() % 250 + 1;
        let ring = Ring {
            tag,
            namespaces: Namespaces::create((0..nodes).map(|i| format!("{prefix}{tag}n{i}")).collect()),
        };
        for (i, namespace) in ring.namespaces.iter().enumerate() {
            ip(&[
                "-n",
                namespace,
                "addr",
                "add",
                &format!("{}/32", ring.own(i)),
                "dev",
                "lo",
            ]);
            let host_end = format!("{host_prefix}{tag}m{i}");
            let _ = Command::new("ip").args(["link", "del", &host_end]).output();
            management_veth(
                &host_end,
                namespace,
                &format!("198.19.{tag}.{}", 128 + 4 * i + 1),
                &ring.management(i).ip().to_string(),
            );
        }
        for i in 0..nodes {
            let next = (i + 1) % nodes;
            let (here, there) = (&ring.namespaces[i], &ring.namespaces[next]);
            veth_link(here, there, &ring.right(i), &ring.left_of_next(i));
            // One hop to the neighbour's own address, from our own: sessions run between the
            // advertised addresses, which live on `lo`, not on the veths they cross.
            let (own_here, own_there) = (ring.own(i), ring.own(next));
            ip(&[
                "-n",
                here,
                "route",
                "add",
                &format!("{own_there}/32"),
                "via",
                &ring.left_of_next(i),
                "dev",
                "right",
                "src",
                &own_here,
            ]);
            ip(&[
                "-n",
                there,
                "route",
                "add",
                &format!("{own_here}/32"),
                "via",
                &ring.right(i),
                "dev",
                "left",
                "src",
                &own_there,
            ]);
        }
        ring
    }

    /// Starts node `i`'s agent in its namespace: it advertises its own address, dials every
    /// other node's, serves /status on its management address and its fault endpoint on
    /// [`FAULT_API`], followed by `extra`. No --interface: the agent must find `left` and
    /// `right` from its peers' routes.
    pub fn start_agent(
        &self,
        i: usize,
        node: &NodeFiles,
        config: &Path,
        extra: &[&str],
        log_dir: &Path,
    ) -> Agent {
        let own = self.own(i);
        let peers = (0..self.namespaces.len())
            .filter(|&j| j != i)
            .map(|j| format!("{}:7946", self.own(j)))
            .collect();
        let mut spec = AgentSpec::in_netns(
            node,
            config,
            &self.namespaces[i],
            &own,
            self.management(i),
            peers,
            log_dir,
        );
        spec.extra = ["--fault-api", FAULT_API].iter().chain(extra).copied().collect();
        Agent::start(&spec)
    }
}

/// A request to the fault endpoint of the agent in `namespace` (loopback there only), made
/// with `ip netns exec <ns> curl`.
pub fn fault_api(namespace: &str, method: &str, path: &str) -> Result<String, String> {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            namespace,
            "curl",
            "-sS",
            "--fail-with-body",
            "--max-time",
            "5",
        ])
        .args(["-X", method, &format!("http://{FAULT_API}{path}")])
        .output()
        .map_err(|error| format!("cannot run curl in {namespace}: {error}"))?;
    let body = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(body)
    } else {
        Err(format!(
            "{method} {path} in {namespace}: {body}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
