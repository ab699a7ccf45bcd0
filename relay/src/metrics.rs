//! Counters and the Prometheus text exposition served at `/metrics`.
//!
//! A handful of atomics and one fixed-bucket histogram: the exposition format is a few lines
//! of text, and no registry or macro layer is needed for that.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Why the relay closed a connection (or saw it end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    PeerClosed,
    AuthFailed,
    Replaced,
    RateLimited,
    Idle,
    SlowReader,
    TooBig,
    Protocol,
    Shutdown,
}

impl CloseReason {
    pub const ALL: [CloseReason; 9] = [
        Self::PeerClosed,
        Self::AuthFailed,
        Self::Replaced,
        Self::RateLimited,
        Self::Idle,
        Self::SlowReader,
        Self::TooBig,
        Self::Protocol,
        Self::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PeerClosed => "peer_closed",
            Self::AuthFailed => "auth_failed",
            Self::Replaced => "replaced",
            Self::RateLimited => "rate_limited",
            Self::Idle => "idle",
            Self::SlowReader => "slow_reader",
            Self::TooBig => "too_big",
            Self::Protocol => "protocol_error",
            Self::Shutdown => "shutdown",
        }
    }
}

/// What became of a request a server sent through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The destination answered and the answer went back.
    Answered,
    /// A transaction stored for later delivery (202).
    Queued,
    NotConnected,
    Unreachable,
    Timeout,
    Disconnected,
    QueueFull,
    Refused,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Self::Answered,
        Self::Queued,
        Self::NotConnected,
        Self::Unreachable,
        Self::Timeout,
        Self::Disconnected,
        Self::QueueFull,
        Self::Refused,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Queued => "queued",
            Self::NotConnected => "not_connected",
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
            Self::Disconnected => "disconnected",
            Self::QueueFull => "queue_full",
            Self::Refused => "refused",
        }
    }
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 60.0,
];

#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Authenticated connections now.
    pub connections: AtomicI64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    forwarded: [AtomicU64; Outcome::ALL.len()],
    /// Answers that matched no waiting request (it timed out, or the id was never issued).
    pub unmatched_answers: AtomicU64,
    /// From receiving a request to passing its answer back, for answered requests.
    pub forward_latency: Histogram,
    pub delivered_from_queue: AtomicU64,
    pub rejected_from_queue: AtomicU64,
    pub delivery_retries: AtomicU64,
}

/// The queue store's gauges, read when `/metrics` is rendered.
pub struct QueueGauges {
    pub transactions: u64,
    pub bytes: u64,
    pub destinations: u64,
}

impl Metrics {
    pub fn closed(&self, r: CloseReason) {
        self.closed[r as usize].fetch_add(1, Relaxed);
    }

    pub fn forwarded(&self, o: Outcome) {
        self.forwarded[o as usize].fetch_add(1, Relaxed);
    }

    pub fn forwarded_count(&self, o: Outcome) -> u64 {
        self.forwarded[o as usize].load(Relaxed)
    }

    pub fn render(&self, queue: &QueueGauges) -> String {
        let mut out = String::with_capacity(4096);
        let o = &mut out;
        family(
            o,
            "hearth_relay_connections",
            "gauge",
            "Servers connected and authenticated now.",
        );
        sample(
            o,
            "hearth_relay_connections",
            "",
            self.connections.load(Relaxed),
        );
        family(
            o,
            "hearth_relay_handshakes_total",
            "counter",
            "WebSocket handshakes by result.",
        );
        sample(
            o,
            "hearth_relay_handshakes_total",
            "result=\"accepted\"",
            self.accepted.load(Relaxed),
        );
        sample(
            o,
            "hearth_relay_handshakes_total",
            "result=\"refused\"",
            self.refused.load(Relaxed),
        );
        family(
            o,
            "hearth_relay_connections_closed_total",
            "counter",
            "Connections ended, by reason.",
        );
        for r in CloseReason::ALL {
            let labels = format!("reason=\"{}\"", r.as_str());
            sample(
                o,
                "hearth_relay_connections_closed_total",
                &labels,
                self.closed[r as usize].load(Relaxed),
            );
        }
        family(
            o,
            "hearth_relay_received_bytes_total",
            "counter",
            "Bytes of WebSocket messages received from servers.",
        );
        sample(
            o,
            "hearth_relay_received_bytes_total",
            "",
            self.bytes_received.load(Relaxed),
        );
        family(
            o,
            "hearth_relay_sent_bytes_total",
            "counter",
            "Bytes of WebSocket messages sent to servers.",
        );
        sample(
            o,
            "hearth_relay_sent_bytes_total",
            "",
            self.bytes_sent.load(Relaxed),
        );
        family(
            o,
            "hearth_relay_requests_total",
            "counter",
            "Requests servers sent through the relay, by outcome.",
        );
        for oc in Outcome::ALL {
            let labels = format!("outcome=\"{}\"", oc.as_str());
            sample(
                o,
                "hearth_relay_requests_total",
                &labels,
                self.forwarded[oc as usize].load(Relaxed),
            );
        }
        family(
            o,
            "hearth_relay_unmatched_answers_total",
            "counter",
            "Answers for no waiting request (late after a timeout, or unknown ids).",
        );
        sample(
            o,
            "hearth_relay_unmatched_answers_total",
            "",
            self.unmatched_answers.load(Relaxed),
        );
        family(
            o,
            "hearth_relay_forward_duration_seconds",
            "histogram",
            "Time from a request's arrival to its answer's hand-off to the sender.",
        );
        let h = &self.forward_latency;
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += h.buckets[i].load(Relaxed);
            let labels = format!("le=\"{bound}\"");
            sample(
                o,
                "hearth_relay_forward_duration_seconds_bucket",
                &labels,
                cumulative,
            );
        }
        let count = h.count.load(Relaxed);
        sample(
            o,
            "hearth_relay_forward_duration_seconds_bucket",
            "le=\"+Inf\"",
            count,
        );
        let _ = writeln!(
            o,
            "hearth_relay_forward_duration_seconds_sum {}",
            h.sum_nanos.load(Relaxed) as f64 / 1e9
        );
        sample(o, "hearth_relay_forward_duration_seconds_count", "", count);
        family(
            o,
            "hearth_relay_queued_transactions",
            "gauge",
            "Transactions stored for absent destinations.",
        );
        sample(
            o,
            "hearth_relay_queued_transactions",
            "",
            queue.transactions,
        );
        family(
            o,
            "hearth_relay_queued_bytes",
            "gauge",
            "Bytes of stored transactions.",
        );
        sample(o, "hearth_relay_queued_bytes", "", queue.bytes);
        family(
            o,
            "hearth_relay_queued_destinations",
            "gauge",
            "Destinations with stored transactions.",
        );
        sample(
            o,
            "hearth_relay_queued_destinations",
            "",
            queue.destinations,
        );
        family(
            o,
            "hearth_relay_queue_delivered_total",
            "counter",
            "Stored transactions the destination accepted (200).",
        );
        sample(
            o,
            "hearth_relay_queue_delivered_total",
            "",
            self.delivered_from_queue.load(Relaxed),
        );
        family(
            o,
            "hearth_relay_queue_rejected_total",
            "counter",
            "Stored transactions the destination refused outright (4xx other than 429), dropped.",
        );
        sample(
            o,
            "hearth_relay_queue_rejected_total",
            "",
            self.rejected_from_queue.load(Relaxed),
        );
        family(
            o,
            "hearth_relay_queue_retries_total",
            "counter",
            "Deliveries of stored transactions that will be tried again.",
        );
        sample(
            o,
            "hearth_relay_queue_retries_total",
            "",
            self.delivery_retries.load(Relaxed),
        );
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_cumulative_buckets() {
        let m = Metrics::default();
        m.forward_latency.observe(Duration::from_micros(300));
        m.forward_latency.observe(Duration::from_millis(3));
        m.forwarded(Outcome::Answered);
        m.closed(CloseReason::Idle);
        let text = m.render(&QueueGauges {
            transactions: 2,
            bytes: 10,
            destinations: 1,
        });
        assert!(text.contains("hearth_relay_forward_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("hearth_relay_forward_duration_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("hearth_relay_forward_duration_seconds_count 2\n"));
        assert!(text.contains("hearth_relay_requests_total{outcome=\"answered\"} 1\n"));
        assert!(text.contains("hearth_relay_connections_closed_total{reason=\"idle\"} 1\n"));
        assert!(text.contains("hearth_relay_queued_transactions 2\n"));
    }
}
