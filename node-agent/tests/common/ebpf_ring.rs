//! A ring of network namespaces laid out like the demo's, for the eBPF tests (`netns_ebpf.rs`,
//! `netns_link_telemetry.rs`): each node's own address on `lo`, its two neighbours reached over
//! two different veths (`left`, `right`), and a management veth to the host for /status; and
//! the agents' fault endpoint, reached inside a namespace. Root only.

use std::net::SocketAddr;
use std::process::Command;

use super::{Agent, Namespaces, NodeFiles, Scratch, ip, management_veth, veth_link};

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
        scratch: &Scratch,
        i: usize,
        node: &NodeFiles,
        config: &std::path::Path,
        extra: &[&str],
    ) -> Agent {
        let own = self.own(i);
        let peers = (0..self.namespaces.len())
            .filter(|&j| j != i)
            .map(|j| format!("{}:7946", self.own(j)));
        scratch
            .agent(node, config)
            .in_netns(&self.namespaces[i], &own, self.management(i))
            .peers(peers)
            .args(["--fault-api", FAULT_API].iter().chain(extra).copied())
            .start()
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

/// The configuration of a ring with the eBPF datapath on, for mesh `mesh`: post-quantum
/// required, and a silence timeout of 1 s, as in the demo's MeshNetwork. A 300 ms timeout
/// cannot outlast TCP's retransmissions under 30% loss (the retransmission timer alone is at
/// least 200 ms): the link would flap, each new session starting from a perfect cost, instead
/// of degrading.
pub fn ebpf_config(scratch: &Scratch, mesh: &str) -> std::path::PathBuf {
    scratch.write_config(
        &super::TestConfig::new(mesh)
            .require_post_quantum(true)
            .with(|config| {
                config.ebpf_mode = x0tta6bl4_api::mesh_network::EbpfMode::Tc;
                config.neighbour_timeout = std::time::Duration::from_secs(1);
            }),
    )
}
