//! The producer's Prometheus metrics, in a registry per server so tests can run several producers in one process.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// Handles to every metric the producer exports.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// `sluice_producer_http_requests_total{route,status}`.
    pub requests: IntCounterVec,
    /// `sluice_producer_http_request_duration_seconds{route}`.
    pub request_seconds: HistogramVec,
    /// `sluice_producer_events_accepted_total{stream}`.
    pub accepted: IntCounterVec,
    /// `sluice_producer_events_rejected_total{stream,reason}`.
    pub rejected: IntCounterVec,
    /// `sluice_producer_produce_latency_seconds`: from enqueue to the last acknowledgement of a request.
    pub produce_seconds: Histogram,
    /// `sluice_producer_in_flight_events`.
    pub in_flight_events: IntGauge,
    /// `sluice_producer_in_flight_bytes`.
    pub in_flight_bytes: IntGauge,
    /// `sluice_producer_in_flight_unkeyed_bytes`.
    pub in_flight_unkeyed_bytes: IntGauge,
    /// `sluice_producer_schema_registry_up`.
    pub registry_up: IntGauge,
    /// `sluice_producer_waiting_requests`: requests waiting for a consumer group's commit (`?wait=`).
    pub waiting: IntGauge,
    /// `sluice_producer_wait_seconds{for,outcome}`: from Kafka's acknowledgement to the commit (or the timeout).
    pub wait_seconds: HistogramVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "sluice_producer_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sluice_producer_http_request_duration_seconds",
                "HTTP request duration by route",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )?;
        let accepted = IntCounterVec::new(
            Opts::new(
                "sluice_producer_events_accepted_total",
                "Events acknowledged by Kafka",
            ),
            &["stream"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "sluice_producer_events_rejected_total",
                "Events not accepted, by reason",
            ),
            &["stream", "reason"],
        )?;
        let produce_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_producer_produce_latency_seconds",
                "Enqueue to last Kafka acknowledgement, per request",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let in_flight_events = IntGauge::new(
            "sluice_producer_in_flight_events",
            "Events accepted but not yet answered",
        )?;
        let in_flight_bytes = IntGauge::new(
            "sluice_producer_in_flight_bytes",
            "Request bytes held by requests in progress",
        )?;
        let in_flight_unkeyed_bytes = IntGauge::new(
            "sluice_producer_in_flight_unkeyed_bytes",
            "Request bytes held by Segment requests whose key is only in the body (a budget of their own)",
        )?;
        let registry_up = IntGauge::new(
            "sluice_producer_schema_registry_up",
            "1 while the schema registry answers (needed only at start-up: not part of /readyz)",
        )?;
        let waiting = IntGauge::new(
            "sluice_producer_waiting_requests",
            "Requests waiting for a consumer group to commit past their events (?wait=clickhouse|lake)",
        )?;
        let wait_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sluice_producer_wait_seconds",
                "Kafka acknowledgement to the consumer group's commit, per waiting request",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["for", "outcome"],
        )?;
        registry.register(Box::new(waiting.clone()))?;
        registry.register(Box::new(wait_seconds.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(accepted.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(produce_seconds.clone()))?;
        registry.register(Box::new(in_flight_events.clone()))?;
        registry.register(Box::new(in_flight_bytes.clone()))?;
        registry.register(Box::new(in_flight_unkeyed_bytes.clone()))?;
        registry.register(Box::new(registry_up.clone()))?;
        Ok(Self {
            registry,
            requests,
            request_seconds,
            accepted,
            rejected,
            produce_seconds,
            in_flight_events,
            in_flight_bytes,
            in_flight_unkeyed_bytes,
            registry_up,
            waiting,
            wait_seconds,
        })
    }
}
