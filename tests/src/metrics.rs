//! Reads the proxies' Prometheus text (`/metrics` on the admin port): the
//! samples, and per-backend request totals, success rates and latency
//! quantiles estimated from histogram buckets, for the demo and tests.

use std::collections::BTreeMap;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses Prometheus text exposition; comments and malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.trim().parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)?),
        None => (head, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    while !s.is_empty() {
        let (k, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end?;
        out.insert(k.trim_start_matches(',').trim().to_string(), value);
        s = rest[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

/// What one backend served, as a client's sidecar saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendStats {
    pub requests: f64,
    pub successes: f64,
    /// Estimated from histogram buckets (upper bound of the bucket holding
    /// the quantile), in seconds.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

impl BackendStats {
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| self.successes / self.requests)
    }
}

/// Per backend label: outbound request totals (`trellis_requests_total`),
/// 2xx/3xx counted as successes, and latency quantiles from
/// `trellis_request_duration_seconds`.
pub fn outbound_by_backend(samples: &[Sample]) -> BTreeMap<String, BackendStats> {
    let mut out: BTreeMap<String, BackendStats> = BTreeMap::new();
    let outbound = |s: &&Sample| s.labels.get("direction").map(String::as_str) == Some("outbound");
    for s in samples
        .iter()
        .filter(|s| s.name == "trellis_requests_total")
        .filter(outbound)
    {
        let Some(backend) = s.labels.get("backend") else {
            continue;
        };
        let e = out.entry(backend.clone()).or_default();
        e.requests += s.value;
        let status: u16 = s
            .labels
            .get("status")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if (200..400).contains(&status) {
            e.successes += s.value;
        }
    }
    let mut buckets: BTreeMap<String, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.name == "trellis_request_duration_seconds_bucket")
        .filter(outbound)
    {
        let (Some(backend), Some(le)) = (s.labels.get("backend"), s.labels.get("le")) else {
            continue;
        };
        let le: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        };
        let slot = buckets
            .entry(backend.clone())
            .or_default()
            .entry(le.to_bits())
            .or_insert((le, 0.0));
        slot.1 += s.value;
    }
    for (backend, b) in buckets {
        let mut sorted: Vec<(f64, f64)> = b.into_values().collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = sorted.last().map(|x| x.1).unwrap_or(0.0);
        let q = |q: f64| {
            sorted
                .iter()
                .find(|(_, c)| total > 0.0 && *c >= q * total)
                .map(|(le, _)| *le)
        };
        let e = out.entry(backend).or_default();
        e.p50 = q(0.5);
        e.p99 = q(0.99);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP trellis_requests HTTP requests.
# TYPE trellis_requests counter
trellis_requests_total{direction="outbound",service="demo/web:80",route="HTTPRoute demo/web-canary",backend="demo/web-v1:80",status="200"} 90
trellis_requests_total{direction="outbound",service="demo/web:80",route="HTTPRoute demo/web-canary",backend="demo/web-v1:80",status="503"} 10
trellis_requests_total{direction="inbound",service="demo/web:80",route="",backend="demo/web-v1:80",status="200"} 7
trellis_request_duration_seconds_bucket{direction="outbound",service="demo/web:80",route="r",backend="demo/web-v1:80",le="0.001"} 40
trellis_request_duration_seconds_bucket{direction="outbound",service="demo/web:80",route="r",backend="demo/web-v1:80",le="0.01"} 99
trellis_request_duration_seconds_bucket{direction="outbound",service="demo/web:80",route="r",backend="demo/web-v1:80",le="+Inf"} 100
"#;

    #[test]
    fn samples_and_labels_parse() {
        let s = parse(TEXT);
        assert_eq!(s.len(), 6);
        assert_eq!(s[0].labels["route"], "HTTPRoute demo/web-canary");
        assert_eq!(s[0].value, 90.0);
        let quoted = parse(r#"m{a="x\"y",b="z"} 1"#);
        assert_eq!(quoted[0].labels["a"], "x\"y");
        assert_eq!(quoted[0].labels["b"], "z");
    }

    #[test]
    fn backends_get_totals_success_and_latency() {
        let by = outbound_by_backend(&parse(TEXT));
        let v1 = &by["demo/web-v1:80"];
        assert_eq!(v1.requests, 100.0, "inbound samples are not counted");
        assert_eq!(v1.success_rate(), Some(0.9));
        assert_eq!(v1.p50, Some(0.01));
        assert_eq!(v1.p99, Some(0.01));
    }
}
