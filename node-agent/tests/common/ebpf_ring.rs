//! A ring of network namespaces laid out like the demo's, for the eBPF tests: each node's own
//! address on `lo`, its two neighbours reached over two different veths (`left`, `right`),
//! and a management veth to the host for /status. Taken from `netns_ebpf.rs` (which still
//! has its own copy) with the namespace prefix and size as parameters. Root only.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Command;

use super::common::ip;

/// The namespaces of one run, removed on drop (with them the veths, and the filters on them).
///
/// Addresses (out of the way of netns_ring.rs, which uses .1-.22 of the same /24s):
/// node i's own address 198.18.<tag>.<240+i>/32 on `lo`; link i (node i "right" to node i+1
/// "left") 198.18.<tag>.<128+4i>/30; management 198.19.<tag>.<128+4i>/30 (host .1, node .2).
pub struct Ring {
    pub tag: u32,
    pub namespaces: Vec<String>,
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

    /// A ring of `nodes` namespaces named `<prefix><tag>n<i>`.
    pub fn create(prefix: &str, nodes: usize) -> Ring {
        let tag = std::process::id() % 250 + 1;
        let namespaces: Vec<String> = (0..nodes).map(|i| format!("{prefix}{tag}n{i}")).collect();
        for namespace in &namespaces {
            let _ = Command::new("ip").args(["netns", "del", namespace]).output();
        }
        let ring = Ring { tag, namespaces };
        for (i, namespace) in ring.namespaces.iter().enumerate() {
            ip(&["netns", "add", namespace]);
            ip(&["-n", namespace, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                namespace,
                "addr",
                "add",
                &format!("{}/32", ring.own(i)),
                "dev",
                "lo",
            ]);
            let host_end = format!("{prefix}{tag}m{i}");
            let _ = Command::new("ip").args(["link", "del", &host_end]).output();
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "mgmt", "netns", namespace,
            ]);
            let management = ring.management(i).ip().to_string();
            let host = format!("198.19.{tag}.{}", 128 + 4 * i + 1);
            ip(&["addr", "add", &format!("{host}/30"), "dev", &host_end]);
            ip(&[
                "-n",
                namespace,
                "addr",
                "add",
                &format!("{management}/30"),
                "dev",
                "mgmt",
            ]);
            ip(&["link", "set", &host_end, "up"]);
            ip(&["-n", namespace, "link", "set", "mgmt", "up"]);
        }
        for i in 0..nodes {
            let next = (i + 1) % nodes;
            let (here, there) = (&ring.namespaces[i], &ring.namespaces[next]);
            ip(&[
                "-n", here, "link", "add", "right", "type", "veth", "peer", "name", "left", "netns", there,
            ]);
            ip(&[
                "-n",
                here,
                "addr",
                "add",
                &format!("{}/30", ring.right(i)),
                "dev",
                "right",
            ]);
            ip(&[
                "-n",
                there,
                "addr",
                "add",
                &format!("{}/30", ring.left_of_next(i)),
                "dev",
                "left",
            ]);
            ip(&["-n", here, "link", "set", "right", "up"]);
            ip(&["-n", there, "link", "set", "left", "up"]);
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
}

impl Drop for Ring {
    fn drop(&mut self) {
        for namespace in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", namespace]).output();
        }
    }
}

/// Where the agents serve their fault endpoint (each on its namespace's loopback).
pub const FAULT_API: &str = "127.0.0.1:47190";

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
