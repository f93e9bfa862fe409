//! Network namespaces and veth pairs for the root-only tests, and the check that such a test
//! may run.
//!
//! Those tests are `#[ignore = "needs root and X0_NETNS_TESTS=1: …"]`, so a plain `cargo test`
//! lists them as ignored with the reason; their make target runs them (`--ignored`, as root,
//! with `X0_NETNS_TESTS=1`). Run any other way, [`require_netns`] fails them with what is
//! missing rather than letting them pass without running.
use std::process::Command;

/// What this environment lacks for the root-only tests, or None if it can run them.
pub fn netns_unavailable() -> Option<String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    let asked = std::env::var("X0_NETNS_TESTS").as_deref() == Ok("1");
    (!(root && asked)).then(|| {
        format!("this test needs root (running as root: {root}) and X0_NETNS_TESTS=1 (set: {asked})")
    })
}

/// Panics with what is missing unless the root-only tests may run here; `make_target` is the
/// way to run them (`make netns`).
#[track_caller]
pub fn require_netns(make_target: &str) {
    if let Some(missing) = netns_unavailable() {
        panic!("{missing}: run `{make_target}`");
    }
}

/// Runs `ip` with `args`, panicking with its error output on failure.
#[track_caller]
pub fn ip(args: &[&str]) {
    crate::run(Command::new("ip").args(args), &format!("ip {}", args.join(" ")));
}

/// Network namespaces of one run, made afresh (a namespace left over under the same name is
/// deleted first) with `lo` up, and deleted on drop: with them go the veth ends inside, their
/// peers, and any filter on them.
pub struct Namespaces(Vec<String>);

impl Namespaces {
    pub fn create(names: Vec<String>) -> Namespaces {
        for namespace in &names {
            let _ = Command::new("ip").args(["netns", "del", namespace]).output();
        }
        // Owned before the first `ip netns add`, so that a failure part way still cleans up.
        let namespaces = Namespaces(names);
        for namespace in &namespaces.0 {
            ip(&["netns", "add", namespace]);
            ip(&["-n", namespace, "link", "set", "lo", "up"]);
        }
        namespaces
    }
}

impl std::ops::Deref for Namespaces {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.0
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for namespace in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", namespace]).output();
        }
    }
}

/// A veth pair between two namespaces, both ends up: `right` in `here` with the /30 address
/// `right_address`, `left` in `there` with `left_address`.
pub fn veth_link(here: &str, there: &str, right_address: &str, left_address: &str) {
    ip(&[
        "-n", here, "link", "add", "right", "type", "veth", "peer", "name", "left", "netns", there,
    ]);
    ip(&[
        "-n",
        here,
        "addr",
        "add",
        &format!("{right_address}/30"),
        "dev",
        "right",
    ]);
    ip(&[
        "-n",
        there,
        "addr",
        "add",
        &format!("{left_address}/30"),
        "dev",
        "left",
    ]);
    ip(&["-n", here, "link", "set", "right", "up"]);
    ip(&["-n", there, "link", "set", "left", "up"]);
}

/// A management veth from the host into `namespace`, both ends up: `host_end` on the host with
/// the /30 address `host_address`, `mgmt` in the namespace with `inside_address`.
pub fn management_veth(host_end: &str, namespace: &str, host_address: &str, inside_address: &str) {
    ip(&[
        "link", "add", host_end, "type", "veth", "peer", "name", "mgmt", "netns", namespace,
    ]);
    ip(&["addr", "add", &format!("{host_address}/30"), "dev", host_end]);
    ip(&[
        "-n",
        namespace,
        "addr",
        "add",
        &format!("{inside_address}/30"),
        "dev",
        "mgmt",
    ]);
    ip(&["link", "set", host_end, "up"]);
    ip(&["-n", namespace, "link", "set", "mgmt", "up"]);
}
