//! Query strings (`?seconds=10&pid=42`), the little of them the Go endpoint needs.

/// `key=value` pairs, percent-decoded; a pair that does not decode to UTF-8 is dropped.
pub fn pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_pairs() {
        let p = super::pairs(Some("seconds=10&cgroup=%2Fsystem.slice%2Fa+b&all&bad=%zz"));
        assert_eq!(
            p,
            vec![
                ("seconds".into(), "10".into()),
                ("cgroup".into(), "/system.slice/a b".into()),
                ("all".into(), "".into()),
            ]
        );
        assert!(super::pairs(None).is_empty());
    }
}
