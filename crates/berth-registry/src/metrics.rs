//! Prometheus-style metrics, rendered in the text exposition format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// (method, route, status) → (count, total seconds)
type RequestCounts = BTreeMap<(String, &'static str, u16), (u64, f64)>;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<RequestCounts>,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub uploads_in_progress: AtomicU64,
    pub uploads_completed: AtomicU64,
    pub gc_runs: AtomicU64,
    pub gc_blobs_deleted: AtomicU64,
    pub gc_bytes_freed: AtomicU64,
    pub gc_links_dropped: AtomicU64,
    pub gc_uploads_expired: AtomicU64,
    pub gc_last_run: AtomicU64,
    pub proxy_hits: AtomicU64,
    pub proxy_misses: AtomicU64,
    pub proxy_errors: AtomicU64,
}

impl Metrics {
    pub fn request(&self, method: &str, route: &'static str, status: u16, took: Duration) {
        let mut m = self.requests.lock().unwrap();
        let e = m.entry((method.to_string(), route, status)).or_default();
        e.0 += 1;
        e.1 += took.as_secs_f64();
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let reqs = self.requests.lock().unwrap().clone();
        out.push_str("# HELP berth_registry_http_requests_total HTTP requests by method, endpoint and status.\n");
        out.push_str("# TYPE berth_registry_http_requests_total counter\n");
        for ((m, r, s), (n, _)) in &reqs {
            let _ = writeln!(
                out,
                "berth_registry_http_requests_total{{method=\"{m}\",route=\"{r}\",code=\"{s}\"}} {n}"
            );
        }
        let mut per_route: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
        for ((_, r, _), (n, t)) in &reqs {
            let e = per_route.entry(r).or_default();
            e.0 += n;
            e.1 += t;
        }
        out.push_str("# HELP berth_registry_http_request_duration_seconds Time to the response head (bodies stream after).\n");
        out.push_str("# TYPE berth_registry_http_request_duration_seconds summary\n");
        for (r, (n, t)) in &per_route {
            let _ = writeln!(
                out,
                "berth_registry_http_request_duration_seconds_sum{{route=\"{r}\"}} {t:.6}"
            );
            let _ = writeln!(
                out,
                "berth_registry_http_request_duration_seconds_count{{route=\"{r}\"}} {n}"
            );
        }
        let counters: [(&str, &str, &AtomicU64, &str); 13] = [
            (
                "berth_registry_bytes_sent_total",
                "Blob and manifest bytes sent.",
                &self.bytes_sent,
                "counter",
            ),
            (
                "berth_registry_bytes_received_total",
                "Blob and manifest bytes received.",
                &self.bytes_received,
                "counter",
            ),
            (
                "berth_registry_uploads_in_progress",
                "Upload requests streaming now.",
                &self.uploads_in_progress,
                "gauge",
            ),
            (
                "berth_registry_uploads_completed_total",
                "Blobs committed from uploads.",
                &self.uploads_completed,
                "counter",
            ),
            (
                "berth_registry_gc_runs_total",
                "Garbage-collection runs.",
                &self.gc_runs,
                "counter",
            ),
            (
                "berth_registry_gc_blobs_deleted_total",
                "Blobs deleted by garbage collection.",
                &self.gc_blobs_deleted,
                "counter",
            ),
            (
                "berth_registry_gc_bytes_freed_total",
                "Bytes freed by garbage collection.",
                &self.gc_bytes_freed,
                "counter",
            ),
            (
                "berth_registry_gc_links_dropped_total",
                "Unreferenced repository blob links dropped.",
                &self.gc_links_dropped,
                "counter",
            ),
            (
                "berth_registry_gc_uploads_expired_total",
                "Abandoned uploads removed.",
                &self.gc_uploads_expired,
                "counter",
            ),
            (
                "berth_registry_gc_last_run_timestamp_seconds",
                "When garbage collection last finished.",
                &self.gc_last_run,
                "gauge",
            ),
            (
                "berth_registry_proxy_hits_total",
                "Pull-through cache hits.",
                &self.proxy_hits,
                "counter",
            ),
            (
                "berth_registry_proxy_misses_total",
                "Pull-through cache misses (fetched upstream).",
                &self.proxy_misses,
                "counter",
            ),
            (
                "berth_registry_proxy_errors_total",
                "Failed upstream requests.",
                &self.proxy_errors,
                "counter",
            ),
        ];
        for (name, help, c, kind) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                c.load(Relaxed)
            );
        }
        if let Some(rss) = resident_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
            );
        }
        out
    }
}

fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.request("GET", "blob", 200, Duration::from_millis(5));
        m.request("GET", "blob", 200, Duration::from_millis(5));
        Metrics::add(&m.bytes_sent, 42);
        let s = m.render();
        assert!(s.contains(
            "berth_registry_http_requests_total{method=\"GET\",route=\"blob\",code=\"200\"} 2"
        ));
        assert!(s.contains("berth_registry_bytes_sent_total 42"));
        assert!(s.contains("berth_registry_http_request_duration_seconds_count{route=\"blob\"} 2"));
    }
}
