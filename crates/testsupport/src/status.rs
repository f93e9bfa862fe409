//! What an agent reports: its `/status` JSON (counters, routes, neighbours), its `/ping`, and
//! samples of a Prometheus text exposition (`/metrics`, of an agent or the operator).
use std::io;
use std::net::SocketAddr;

use serde_json::Value;

use crate::http::{get, get_async};

/// `/status` as JSON (blocking), once the agent serves it.
pub fn status(addr: SocketAddr) -> Option<Value> {
    match get(addr, "/status")? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// `/status` as JSON (async), or why not.
pub async fn status_async(addr: SocketAddr) -> io::Result<Value> {
    match get_async(addr, "/status").await? {
        (200, body) => serde_json::from_str(&body).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/status is not JSON: {error}"),
            )
        }),
        (code, _) => Err(io::Error::other(format!("/status answered {code}"))),
    }
}

/// `/ping?to=...&count=...` (blocking): the answered results.
pub fn ping(addr: SocketAddr, to: &str, count: u32) -> Vec<Value> {
    let Some((200, body)) = get(addr, &format!("/ping?to={to}&count={count}&timeout_ms=2000")) else {
        return Vec::new();
    };
    let report: Value = serde_json::from_str(&body).unwrap_or_default();
    report["results"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .filter(|r| r.get("rtt_ms").is_some())
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// A counter's value in a status: `name` with the exact label set, as the agent joins it
/// (`"reason=foo"`, `"direction=inbound,key_exchange=X25519MLKEM768"`, `""` for none).
pub fn counter(status: &Value, name: &str, labels: &str) -> f64 {
    status["counters"][name][labels].as_f64().unwrap_or(0.0)
}

/// A counter's values in a status, summed over every label set.
pub fn counter_sum(status: &Value, name: &str) -> f64 {
    status["counters"][name]
        .as_object()
        .map(|labels| labels.values().filter_map(Value::as_f64).sum())
        .unwrap_or(0.0)
}

/// The routes in a status: destination name, next hop name, hop count.
pub fn routes(status: &Value) -> Vec<(String, String, u64)> {
    status["routes"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .map(|route| {
                    (
                        route["destination_name"].as_str().unwrap_or("?").to_owned(),
                        route["next_hop_name"].as_str().unwrap_or("?").to_owned(),
                        route["hop_count"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The names of the neighbours a status shows alive.
pub fn alive_neighbours(status: &Value) -> Vec<String> {
    status["neighbours"]
        .as_array()
        .map(|neighbours| {
            neighbours
                .iter()
                .filter(|n| n["alive"].as_bool() == Some(true))
                .filter_map(|n| n["node_name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The link cost to neighbour `name` in a status, while that neighbour is alive.
pub fn neighbour_cost(status: &Value, name: &str) -> Option<u64> {
    status["neighbours"]
        .as_array()?
        .iter()
        .find(|n| n["node_name"] == name && n["alive"] == true)?["cost"]
        .as_u64()
}

/// The samples of `name` in a Prometheus text exposition whose label set contains `label`
/// (`""`: every sample), summed; 0 when there is none.
fn samples_sum(body: &str, name: &str, label: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The samples of metric `name` in a Prometheus text exposition, summed over all label sets.
pub fn metric_sum(body: &str, name: &str) -> f64 {
    samples_sum(body, name, "")
}

/// The samples of metric `name` whose labels include `label` (e.g. `kind="DaemonSet"`), summed.
pub fn metric_sum_with(body: &str, name: &str, label: &str) -> f64 {
    samples_sum(body, name, label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_read_for_its_counters_routes_and_neighbours() {
        let status = serde_json::json!({
            "counters": {"x0_agent_fl_updates_total": {"outcome=admitted": 3.0, "outcome=stale_admitted": 2.0}},
            "routes": [{"destination_name": "c", "next_hop_name": "b", "hop_count": 2}],
            "neighbours": [
                {"node_name": "b", "alive": true, "cost": 7},
                {"node_name": "d", "alive": false, "cost": 9},
            ],
        });
        assert_eq!(
            counter(&status, "x0_agent_fl_updates_total", "outcome=admitted"),
            3.0
        );
        assert_eq!(
            counter(&status, "x0_agent_fl_updates_total", "outcome=other"),
            0.0
        );
        assert_eq!(counter_sum(&status, "x0_agent_fl_updates_total"), 5.0);
        assert_eq!(routes(&status), [("c".to_owned(), "b".to_owned(), 2)]);
        assert_eq!(alive_neighbours(&status), ["b"]);
        assert_eq!(neighbour_cost(&status, "b"), Some(7));
        assert_eq!(neighbour_cost(&status, "d"), None);
    }

    #[test]
    fn metrics_are_summed_by_name_and_by_label_without_matching_longer_names() {
        let body = "# HELP x_total x\n# TYPE x_total counter\n\
                    x_total{kind=\"DaemonSet\",result=\"ok\"} 2\n\
                    x_total{result=\"ok\",kind=\"Service\"} 3\n\
                    x_total_other 100\n\
                    y 1\n";
        assert_eq!(metric_sum(body, "x_total"), 5.0);
        assert_eq!(metric_sum_with(body, "x_total", "kind=\"DaemonSet\""), 2.0);
        assert_eq!(metric_sum_with(body, "x_total", "kind=\"Service\""), 3.0);
        assert_eq!(metric_sum(body, "y"), 1.0);
    }
}
