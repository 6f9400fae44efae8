//! Prometheus metrics, prefixed `pullguard_`. Labels carry kinds, verdicts, registry hosts,
//! outcomes and finding codes, never an image path, a user, or anything from a credential.

use std::borrow::Cow;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

// Label values that are known words are borrowed: every admission counts itself, its cache
// lookups and its findings, and none of that should allocate.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub kind: Cow<'static, str>,
    pub operation: Cow<'static, str>,
    pub verdict: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    pub registry: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabels {
    pub registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub code: &'static str,
    pub severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    pub admissions: Family<AdmissionLabels, Counter>,
    pub admission_duration: Histogram,
    pub registry_requests: Family<RegistryLabels, Counter>,
    pub registry_duration: Family<HostLabels, Histogram>,
    pub cache_lookups: Family<CacheLabels, Counter>,
    pub cache_entries: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub findings: Family<FindingLabels, Counter>,
    pub certificate_reloads: Family<ReloadLabels, Counter>,
    pub invalid_mode_labels: Counter,
}

/// Admission latency buckets: most answers come from the cache in well under a millisecond;
/// the tail is the registry and the deadline.
const ADMISSION_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const REGISTRY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pullguard");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission reviews answered, by kind, operation and verdict",
            admissions.clone(),
        );
        let admission_duration = Histogram::new(ADMISSION_BUCKETS);
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission review",
            admission_duration.clone(),
        );
        let registry_requests = Family::<RegistryLabels, Counter>::default();
        registry.register(
            "registry_requests",
            "HTTP requests to registries, by registry host and outcome",
            registry_requests.clone(),
        );
        let registry_duration =
            Family::<HostLabels, Histogram>::new_with_constructor(|| Histogram::new(REGISTRY_BUCKETS));
        registry.register(
            "registry_request_duration_seconds",
            "Time of one registry request",
            registry_duration.clone(),
        );
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Image lookups answered from the cache (hit) or the registry (miss)",
            cache_lookups.clone(),
        );
        let cache_entries = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "cache_entries",
            "Entries in the image facts cache (an expired entry counts until replaced or evicted)",
            cache_entries.clone(),
        );
        let findings = Family::<FindingLabels, Counter>::default();
        registry.register("findings", "Findings reported, by code and severity", findings.clone());
        let certificate_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate changes seen, by result (swapped, rejected)",
            certificate_reloads.clone(),
        );
        let invalid_mode_labels = Counter::default();
        registry.register(
            "invalid_mode_labels",
            "Namespaces found with a pullguard.io/mode label that is no mode (counted once per namespace and value)",
            invalid_mode_labels.clone(),
        );
        Metrics {
            invalid_mode_labels,
            registry,
            admissions,
            admission_duration,
            registry_requests,
            registry_duration,
            cache_lookups,
            cache_entries,
            findings,
            certificate_reloads,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Encoding into a String cannot fail; an empty body would be the only symptom.
        let _ = encode(&mut text, &self.registry);
        text
    }

    pub fn cache_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache_lookups.get_or_create(&CacheLabels { result }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_prefixed_families() {
        let metrics = Metrics::new();
        metrics
            .admissions
            .get_or_create(&AdmissionLabels {
                kind: "Pod".into(),
                operation: "CREATE".into(),
                verdict: "denied".into(),
            })
            .inc();
        metrics.cache_lookup(true);
        metrics.admission_duration.observe(0.002);
        let text = metrics.encode();
        assert!(
            text.contains(
                "pullguard_admissions_total{kind=\"Pod\",operation=\"CREATE\",verdict=\"denied\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("pullguard_cache_lookups_total{result=\"hit\"} 1"), "{text}");
        assert!(text.contains("pullguard_admission_duration_seconds_bucket"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
