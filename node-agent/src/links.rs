//! Link telemetry: this agent's own record of its links (the mesh and the eBPF datapath feed
//! it), and the `linkTelemetry` dataset made from it for a federated job that learns the
//! mesh's anomaly detector. Nothing recorded leaves the agent; only model updates do.
//!
//! Every second (the self-healing pass, [`SAMPLE_EVERY_NS`] apart at least), each live
//! neighbour's link gives one sample of [`SAMPLE_FEATURES`] values; a window is a link's last
//! [`WINDOW`] consecutive samples, oldest first, flattened into [`FEATURES`] values (so the
//! job's `spec.model.inputDim` must be [`FEATURES`] and `classes` [`CLASSES`]). A window is
//! labelled 1 (faulty) if, at any of its samples, this agent's fault map (faults injected
//! through its `--fault-api`) held an unexpired fault for that neighbour's address, else 0.
//! A new window is made every second per link, so consecutive windows of a link overlap.
//!
//! Features of one sample, each scaled by a fixed constant (every agent scales alike, and none
//! shares statistics of its data):
//! 0. hello loss: `loss_percent / 100` (0..1);
//! 1. RTT: `ln(1 + ms) / ln(1 + 1000)`, at most 2 (1 ms → 0.10, 50 ms → 0.57, 1 s → 1); 0
//!    before the first echo;
//! 2. packets received from the peer per second (eBPF counters): `ln(1 + pps) / ln(1 + 10^4)`,
//!    at most 2; 0 without the datapath;
//! 3. packets sent to the peer per second, scaled alike.
//!
//! Not features: the eBPF drop counter, and the link cost (which adds the drop share to loss
//! and RTT). The datapath counts only the drops it makes itself, the injected faults: a model
//! fed that counter learns the label, not the link, and would see nothing of a real fault.
//!
//! Bounded: the newest [`CAPACITY`] windows are kept, the oldest evicted first.
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use x0tta6bl4_fl::dataset::Dataset;
use x0tta6bl4_routing::LinkCounters;
use x0tta6bl4_wire::NodeId;

use x0tta6bl4_fl::dataset::TEST_FRACTION;

/// Samples in a window (seconds of one link).
pub const WINDOW: usize = 5;
/// Values per sample: hello loss, RTT, packets received and sent per second.
pub const SAMPLE_FEATURES: usize = 4;
/// Values per window: what `spec.model.inputDim` of a linkTelemetry job must be.
pub const FEATURES: usize = WINDOW * SAMPLE_FEATURES;
// The API checks a job's inputDim against its own copy of this number, before any agent sees
// the job: the two must not drift apart.
const _: () = assert!(FEATURES as i64 == x0tta6bl4_api::fl_round::LINK_TELEMETRY_FEATURES as i64);
/// Healthy (0) and faulty (1): what `spec.model.classes` of a linkTelemetry job must be.
pub const CLASSES: usize = 2;
/// Windows kept (about 80 KiB each thousand).
pub const CAPACITY: usize = 4096;
/// Least time between two samples of the links.
pub const SAMPLE_EVERY_NS: u64 = 1_000_000_000;
/// Fewest windows a participant trains on; with fewer it sends no update that round.
pub const MIN_TRAINING_WINDOWS: usize = 20;
/// Fewest held-out windows the aggregator evaluates on.
pub const MIN_TEST_WINDOWS: usize = 10;

/// RTT that scales to 1, in milliseconds.
const RTT_FULL_SCALE_MS: f64 = 1000.0;
/// Packet rate that scales to 1, per second.
const RATE_FULL_SCALE_PPS: f64 = 10_000.0;
/// Largest scaled value: an outlier must not swamp the other features.
const MAX_SCALED: f64 = 2.0;

/// What the mesh sees of one live neighbour's link at a sampling pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkReading {
    pub peer: NodeId,
    /// The session's remote address: it keys the eBPF counters and the fault map.
    pub address: Option<IpAddr>,
    pub loss_percent: u32,
    pub rtt: Option<Duration>,
}

/// One labelled window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub peer: NodeId,
    /// The sampling pass of its newest sample.
    pub tick: u64,
    pub features: [f32; FEATURES],
    pub faulty: bool,
}

/// Which part of the recorded windows: a job holds out the same share on every agent, and only
/// the aggregator evaluates on its held-out part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Train,
    Test,
}

#[derive(Default)]
struct Link {
    samples: VecDeque<Sample>,
    /// The counters at the previous sample, and when, for per-second rates.
    previous: Option<(u64, LinkCounters)>,
}

#[derive(Clone, Copy)]
struct Sample {
    features: [f32; SAMPLE_FEATURES],
    fault: bool,
}

/// The recorder, sans IO: fed the datapath's readings and the mesh's link readings.
pub struct LinkRecorder {
    capacity: usize,
    tick: u64,
    last_sample_ns: Option<u64>,
    links: HashMap<NodeId, Link>,
    /// Newest cumulative eBPF counters by peer address.
    counters: HashMap<IpAddr, LinkCounters>,
    /// Faults of this agent's fault map by peer address, with their expiry (monotonic ns).
    faults: HashMap<IpAddr, u64>,
    windows: VecDeque<Window>,
}

impl Default for LinkRecorder {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl LinkRecorder {
    pub fn with_capacity(capacity: usize) -> Self {
        LinkRecorder {
            capacity: capacity.max(1),
            tick: 0,
            last_sample_ns: None,
            links: HashMap::new(),
            counters: HashMap::new(),
            faults: HashMap::new(),
            windows: VecDeque::new(),
        }
    }

    /// The datapath's newest reading: cumulative counters and the fault map (peer address,
    /// expiry in monotonic ns). Replaces the previous one (a fault deleted is gone).
    pub fn observe_datapath(
        &mut self,
        counters: &[(IpAddr, LinkCounters)],
        faults: impl IntoIterator<Item = (IpAddr, u64)>,
    ) {
        self.counters = counters.iter().map(|(a, c)| (a.to_canonical(), *c)).collect();
        self.faults = faults.into_iter().map(|(a, e)| (a.to_canonical(), e)).collect();
    }

    /// One sampling pass over the live neighbours at `now_ns` (monotonic, the fault map's
    /// clock); ignored (false) if the previous pass was less than [`SAMPLE_EVERY_NS`] ago.
    pub fn sample(&mut self, now_ns: u64, live: &[LinkReading]) -> bool {
        if self
            .last_sample_ns
            .is_some_and(|last| now_ns.saturating_sub(last) < SAMPLE_EVERY_NS)
        {
            return false;
        }
        self.last_sample_ns = Some(now_ns);
        self.tick += 1;
        // A window is consecutive seconds of one live link: a link missing from a pass starts
        // over when it comes back.
        self.links.retain(|peer, _| live.iter().any(|r| r.peer == *peer));
        for reading in live {
            let address = reading.address.map(|a| a.to_canonical());
            let counters = address.and_then(|a| self.counters.get(&a)).copied();
            let fault = address
                .and_then(|a| self.faults.get(&a))
                .is_some_and(|&expires| expires > now_ns);
            let link = self.links.entry(reading.peer).or_default();
            let (rx, tx) = link.rates(now_ns, counters);
            link.samples.push_back(Sample {
                features: [
                    (f64::from(reading.loss_percent.min(100)) / 100.0) as f32,
                    reading.rtt.map_or(0.0, scale_rtt),
                    rx,
                    tx,
                ],
                fault,
            });
            if link.samples.len() > WINDOW {
                link.samples.pop_front();
            }
            if link.samples.len() == WINDOW {
                let mut features = [0f32; FEATURES];
                for (chunk, sample) in features.chunks_exact_mut(SAMPLE_FEATURES).zip(&link.samples) {
                    chunk.copy_from_slice(&sample.features);
                }
                if self.windows.len() == self.capacity {
                    self.windows.pop_front();
                }
                self.windows.push_back(Window {
                    peer: reading.peer,
                    tick: self.tick,
                    features,
                    faulty: link.samples.iter().any(|s| s.fault),
                });
            }
        }
        true
    }

    pub fn windows(&self) -> impl ExactSizeIterator<Item = &Window> {
        self.windows.iter()
    }

    /// The windows of `part` for the job seeded `seed`, as a dataset (label 1: faulty).
    pub fn dataset(&self, part: Part, seed: u64) -> Dataset {
        let chosen: Vec<&Window> = self
            .windows
            .iter()
            .filter(|w| held_out(seed, w) == (part == Part::Test))
            .collect();
        let features = chosen.iter().flat_map(|w| w.features).collect();
        let labels = chosen.iter().map(|w| u32::from(w.faulty)).collect();
        // The shape holds by construction: whole windows, finite values, labels 0 and 1.
        Dataset::from_rows(features, labels, FEATURES, CLASSES).unwrap_or_else(|_| empty())
    }

    /// What a participant trains on: its windows outside the held-out part, if there are
    /// enough.
    pub fn training_set(&self, seed: u64) -> Result<Dataset, String> {
        enough(
            self.dataset(Part::Train, seed),
            MIN_TRAINING_WINDOWS,
            "training",
            self.windows.len(),
        )
    }

    /// What the aggregator evaluates on: its held-out windows, if there are enough.
    pub fn test_set(&self, seed: u64) -> Result<Dataset, String> {
        enough(
            self.dataset(Part::Test, seed),
            MIN_TEST_WINDOWS,
            "held-out",
            self.windows.len(),
        )
    }
}

impl Link {
    /// Packets per second received and sent since the previous sample, scaled.
    fn rates(&mut self, now_ns: u64, counters: Option<LinkCounters>) -> (f32, f32) {
        let rates = match (self.previous, counters) {
            (Some((at, before)), Some(now)) if now_ns > at => {
                let seconds = (now_ns - at) as f64 / 1e9;
                // The kernel's counters only grow while the maps live; a smaller value means
                // new maps, and no rate for this second.
                let per_second =
                    |now: u64, before: u64| now.checked_sub(before).map_or(0.0, |d| d as f64 / seconds);
                (
                    per_second(now.rx_packets, before.rx_packets),
                    per_second(now.tx_packets, before.tx_packets),
                )
            }
            _ => (0.0, 0.0),
        };
        self.previous = counters.map(|c| (now_ns, c));
        (scale_rate(rates.0), scale_rate(rates.1))
    }
}

fn scale_rtt(rtt: Duration) -> f32 {
    let ms = rtt.as_secs_f64() * 1000.0;
    (ms.ln_1p() / RTT_FULL_SCALE_MS.ln_1p()).min(MAX_SCALED) as f32
}

fn scale_rate(per_second: f64) -> f32 {
    (per_second.max(0.0).ln_1p() / RATE_FULL_SCALE_PPS.ln_1p()).min(MAX_SCALED) as f32
}

fn empty() -> Dataset {
    Dataset {
        features: Vec::new(),
        labels: Vec::new(),
        dim: FEATURES,
        classes: CLASSES,
    }
}

fn enough(set: Dataset, minimum: usize, what: &str, recorded: usize) -> Result<Dataset, String> {
    if set.len() >= minimum {
        return Ok(set);
    }
    Err(format!(
        "only {} {what} link-telemetry windows of {recorded} recorded, fewer than the {minimum} \
         needed (a window per live link per second, once a link has been up {WINDOW} s)",
        set.len()
    ))
}

/// Whether a window is in the held-out share ([`TEST_FRACTION`]) of the job seeded `seed`: a
/// hash of the seed, the window's sampling pass and its peer, so the split is the same
/// whenever it is taken and differs between jobs. Consecutive windows of a link share samples,
/// so a held-out window is not independent of its neighbours in the training part.
pub fn held_out(seed: u64, window: &Window) -> bool {
    let peer = u64::from_le_bytes(window.peer.0[..8].try_into().unwrap_or([0; 8]));
    let hash = splitmix64(seed ^ splitmix64(window.tick ^ splitmix64(peer)));
    ((hash >> 11) as f64 / (1u64 << 53) as f64) < TEST_FRACTION
}

/// SplitMix64's finaliser: a fixed, well-mixing function of 64 bits.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The agent's recorder, shared by the mesh (samples), the datapath (counters and faults) and
/// the federated parts (datasets). Each holds the lock only briefly, never across an await.
#[derive(Clone, Default)]
pub struct SharedRecorder(Arc<Mutex<LinkRecorder>>);

impl SharedRecorder {
    pub fn lock(&self) -> MutexGuard<'_, LinkRecorder> {
        // A panic elsewhere mid-update leaves at worst one partial pass: still usable data.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn peer(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn address(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn reading(n: u8, loss_percent: u32, rtt_ms: u64) -> LinkReading {
        LinkReading {
            peer: peer(n),
            address: Some(address(n)),
            loss_percent,
            rtt: Some(Duration::from_millis(rtt_ms)),
        }
    }

    #[test]
    fn a_window_is_faulty_when_a_fault_covers_any_part_of_it() {
        let mut recorder = LinkRecorder::default();
        // A fault on link 1 set at second 6 (after the 6th sample at t=5 s), expiring at 8.5 s.
        for second in 0..16u64 {
            if second == 6 {
                recorder.observe_datapath(&[], [(address(1), 8 * SECOND + SECOND / 2)]);
            }
            assert!(recorder.sample(second * SECOND, &[reading(1, 0, 1), reading(2, 0, 1)]));
        }
        let faulty: Vec<(u8, u64, bool)> = recorder
            .windows()
            .map(|w| (w.peer.0[0], w.tick, w.faulty))
            .collect();
        // Ticks are 1-based: the samples at 6, 7 and 8 s are ticks 7, 8, 9. Windows of link 1
        // ending at ticks 7..=13 hold one of them; link 2 is never faulty.
        for (link, tick, is_faulty) in faulty {
            let expected = link == 1 && (7..=13).contains(&tick);
            assert_eq!(is_faulty, expected, "link {link} window ending at tick {tick}");
        }
        assert_eq!(recorder.windows().len(), 2 * (16 - WINDOW + 1));
    }

    #[test]
    fn a_fault_of_another_address_or_expired_does_not_label() {
        let mut recorder = LinkRecorder::default();
        recorder.observe_datapath(&[], [(address(9), u64::MAX), (address(1), 2 * SECOND)]);
        for second in 3..3 + WINDOW as u64 {
            recorder.sample(second * SECOND, &[reading(1, 0, 1)]);
        }
        assert_eq!(recorder.windows().len(), 1);
        assert!(recorder.windows().all(|w| !w.faulty));
        // An IPv4-mapped IPv6 session address is the same peer as its IPv4 fault key.
        let mut mapped = LinkRecorder::default();
        mapped.observe_datapath(&[], [(address(1), u64::MAX)]);
        let v6 = match address(1) {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            other => other,
        };
        for second in 0..WINDOW as u64 {
            mapped.sample(
                second * SECOND,
                &[LinkReading {
                    address: Some(v6),
                    ..reading(1, 0, 1)
                }],
            );
        }
        assert!(mapped.windows().all(|w| w.faulty));
    }

    #[test]
    fn features_are_scaled_by_fixed_constants() {
        let mut recorder = LinkRecorder::default();
        let counters = |packets: u64| LinkCounters {
            tx_packets: packets,
            rx_packets: 2 * packets,
            drops: 7 * packets,
        };
        for second in 0..WINDOW as u64 {
            recorder.observe_datapath(&[(address(1), counters(100 * second))], []);
            recorder.sample(second * SECOND, &[reading(1, 25, 50)]);
        }
        let window = recorder.windows().next().unwrap();
        let close = |a: f32, b: f64| (f64::from(a) - b).abs() < 1e-5;
        let full_rtt = 1001f64.ln();
        let full_rate = 10_001f64.ln();
        // The first sample has no previous counters: no rate.
        assert_eq!(window.features[..SAMPLE_FEATURES][2..], [0.0, 0.0]);
        for sample in window.features.chunks_exact(SAMPLE_FEATURES) {
            assert!(close(sample[0], 0.25), "{sample:?}");
            assert!(close(sample[1], 51f64.ln() / full_rtt), "{sample:?}");
        }
        let last = &window.features[FEATURES - SAMPLE_FEATURES..];
        assert!(close(last[2], 201f64.ln() / full_rate), "rx 200/s: {last:?}");
        assert!(close(last[3], 101f64.ln() / full_rate), "tx 100/s: {last:?}");
        // Outliers are capped, and no value depends on what else the agent recorded.
        let mut wild = LinkRecorder::default();
        for second in 0..WINDOW as u64 {
            wild.sample(second * SECOND, &[reading(1, 400, 3_600_000)]);
        }
        let window = wild.windows().next().unwrap();
        assert!(close(window.features[0], 1.0) && close(window.features[1], MAX_SCALED));
    }

    #[test]
    fn passes_closer_than_a_second_and_dead_links_are_not_sampled() {
        let mut recorder = LinkRecorder::default();
        assert!(recorder.sample(0, &[reading(1, 0, 1)]));
        assert!(!recorder.sample(SECOND / 2, &[reading(1, 0, 1)]));
        for second in 1..WINDOW as u64 - 1 {
            recorder.sample(second * SECOND, &[reading(1, 0, 1)]);
        }
        // Link 1 is missing from one pass: its history starts over.
        recorder.sample(10 * SECOND, &[]);
        for second in 11..11 + WINDOW as u64 - 1 {
            recorder.sample(second * SECOND, &[reading(1, 0, 1)]);
        }
        assert_eq!(recorder.windows().len(), 0);
        recorder.sample(20 * SECOND, &[reading(1, 0, 1)]);
        assert_eq!(recorder.windows().len(), 1);
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_windows_go_first() {
        let mut recorder = LinkRecorder::with_capacity(10);
        let links: Vec<LinkReading> = (1..=3).map(|n| reading(n, 0, 1)).collect();
        for second in 0..100u64 {
            recorder.sample(second * SECOND, &links);
        }
        assert_eq!(recorder.windows().len(), 10);
        let ticks: Vec<u64> = recorder.windows().map(|w| w.tick).collect();
        assert_eq!(ticks.first(), Some(&97), "{ticks:?}");
        assert_eq!(ticks.last(), Some(&100));
        assert!(recorder.links.values().all(|l| l.samples.len() == WINDOW));
    }

    #[test]
    fn train_and_test_parts_split_the_windows_by_seed() {
        let mut recorder = LinkRecorder::default();
        let links: Vec<LinkReading> = (1..=2).map(|n| reading(n, 0, 1)).collect();
        recorder.observe_datapath(&[], [(address(1), 200 * SECOND)]);
        for second in 0..400u64 {
            recorder.sample(second * SECOND, &links);
        }
        let total = recorder.windows().len();
        let (train, test) = (recorder.dataset(Part::Train, 7), recorder.dataset(Part::Test, 7));
        assert_eq!(train.len() + test.len(), total);
        assert_eq!((train.dim, train.classes), (FEATURES, CLASSES));
        let share = test.len() as f64 / total as f64;
        assert!((0.15..0.25).contains(&share), "held-out share {share}");
        assert!(
            test.class_counts().iter().all(|&c| c > 0),
            "both classes held out"
        );
        assert_eq!(test, recorder.dataset(Part::Test, 7), "the same split every time");
        assert_ne!(
            test,
            recorder.dataset(Part::Test, 8),
            "another job, another split"
        );
        assert_eq!(recorder.training_set(7).unwrap(), train);
        assert_eq!(recorder.test_set(7).unwrap(), test);
    }

    #[test]
    fn too_few_windows_are_refused_with_the_reason() {
        let mut recorder = LinkRecorder::default();
        for second in 0..(WINDOW + 3) as u64 {
            recorder.sample(second * SECOND, &[reading(1, 0, 1)]);
        }
        let error = recorder.training_set(1).unwrap_err();
        assert!(error.contains("fewer than the 20 needed"), "{error}");
        assert!(recorder.test_set(1).unwrap_err().contains("held-out"));
    }
}
