//! Grafana Pyroscope's ingest API: `POST /ingest?name=SERVICE{labels}&from=…&until=…&format=pprof`
//! with a gzipped pprof body. The CPU profile's sample types (`samples/count`,
//! `cpu/nanoseconds`) are those of Go's CPU profile, which Pyroscope knows; the off-CPU
//! profile's are not, so it goes as a form with a `sample_type_config` saying how to read
//! them (Pyroscope's documented way for custom pprof types).
use super::{http::encode_query, spool::Request};

/// The labels a service's profile is pushed with, and its name.
pub struct Target<'a> {
    pub service: &'a str,
    pub labels: &'a [(String, String)],
    pub from_ns: u64,
    pub until_ns: u64,
    pub frequency_hz: u64,
}

/// Pyroscope takes `[A-Za-z0-9._-]` in names and label keys; values lose the characters
/// that would end them (`,` `}` `=` `"`).
fn name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn label_value(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, ',' | '{' | '}' | '=' | '"') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// `SERVICE{k=v,…}` as Pyroscope's `name` parameter reads it.
pub fn app_name(service: &str, labels: &[(String, String)]) -> String {
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}={}", name_part(k), label_value(v)))
        .collect();
    format!("{}{{{}}}", name_part(service), labels.join(","))
}

fn target(t: &Target) -> String {
    // Whole seconds: a window's edges are period boundaries except the first and the last.
    let from = t.from_ns / 1_000_000_000;
    let until = t
        .until_ns
        .div_ceil(1_000_000_000)
        .max(from.saturating_add(1));
    format!(
        "/ingest?name={}&from={from}&until={until}&format=pprof&sampleRate={}&spyName=profiler",
        encode_query(&app_name(t.service, t.labels)),
        t.frequency_hz
    )
}

/// The CPU profile, as a raw body.
pub fn cpu(t: &Target, pprof_gz: Vec<u8>) -> Request {
    Request {
        target: target(t),
        content_type: "application/octet-stream".into(),
        body: pprof_gz,
    }
}

/// How Pyroscope is to read the off-CPU profile's sample types: summed, not sampled.
const OFF_CPU_CONFIG: &str = r#"{"off_cpu":{"units":"samples","aggregation":"sum","display-name":"off_cpu_nanoseconds","sampled":false},"intervals":{"units":"samples","aggregation":"sum","display-name":"off_cpu_intervals","sampled":false}}"#;

/// The off-CPU profile, as a form with its sample type configuration.
pub fn off_cpu(t: &Target, pprof_gz: Vec<u8>) -> Request {
    let boundary = format!("profiler-{:016x}", t.from_ns ^ 0x5eed_5eed_5eed_5eed);
    let mut body = Vec::with_capacity(pprof_gz.len() + 512);
    let mut part = |name: &str, file: &str, bytes: &[u8]| {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    };
    part("profile", "offcpu.pb.gz", &pprof_gz);
    part(
        "sample_type_config",
        "config.json",
        OFF_CPU_CONFIG.as_bytes(),
    );
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Request {
        target: target(t),
        content_type: format!("multipart/form-data; boundary={boundary}"),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_labels_and_refuse_characters_that_would_break_them() {
        let labels = vec![
            ("env".to_string(), "prod,eu".to_string()),
            ("pid".to_string(), "42".to_string()),
        ];
        assert_eq!(app_name("my app", &labels), "my_app{env=prod_eu,pid=42}");
        assert_eq!(app_name("svc", &[]), "svc{}");
    }

    #[test]
    fn the_query_names_the_window_in_whole_seconds() {
        let t = Target {
            service: "svc",
            labels: &[],
            from_ns: 1_700_000_010_000_000_000,
            until_ns: 1_700_000_024_500_000_000,
            frequency_hz: 19,
        };
        let r = cpu(&t, vec![1, 2]);
        assert_eq!(
            r.target,
            "/ingest?name=svc%7B%7D&from=1700000010&until=1700000025&format=pprof&sampleRate=19&spyName=profiler"
        );
        let f = off_cpu(&t, vec![9; 3]);
        assert!(f.content_type.starts_with("multipart/form-data; boundary="));
        let body = String::from_utf8_lossy(&f.body);
        assert!(body.contains("name=\"profile\"") && body.contains("name=\"sample_type_config\""));
    }
}
