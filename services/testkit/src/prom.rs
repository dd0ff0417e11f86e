//! Reading a Prometheus text exposition (what `/metrics` answers) in tests: the sum of the
//! samples of one metric whose labels include given pairs.

/// The sum of the samples of `name` in `text` whose labels include every pair of `labels`
/// (exact names and values); 0 when there are none.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(sample)
        .filter(|(n, pairs, _)| {
            *n == name
                && labels
                    .iter()
                    .all(|(k, v)| pairs.iter().any(|(pk, pv)| pk == k && pv == v))
        })
        .map(|(_, _, value)| value)
        .sum()
}

/// Label pairs, values unescaped.
type Labels = Vec<(String, String)>;

/// One sample line: its metric name, label pairs and value. None for a line that is not one.
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let line = line.trim();
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let (pairs, rest) = match rest.strip_prefix('{') {
        Some(r) => labels(r)?,
        None => (Vec::new(), rest),
    };
    // The value, then an optional timestamp.
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, pairs, value))
}

/// The label pairs after a `{`, and what follows the closing `}`.
fn labels(mut s: &str) -> Option<(Labels, &str)> {
    let mut pairs = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((pairs, rest));
        }
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        pairs.push((key.trim().to_owned(), value));
        s = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_samples_whose_labels_match_exactly() {
        let text = "# HELP x calls\n# TYPE x counter\n\
            x{svc=\"a\",code=\"OK\"} 3\n\
            x{svc=\"a\",code=\"NotFound\"} 1 1700000000\n\
            x{svc=\"ab\",code=\"OK\"} 10\n\
            x{my_svc=\"a\",code=\"OK\"} 100\n\
            x{svc=\"a \\\"q\\\", b\",code=\"OK\"} 1000\n\
            x_total 7\nx 5\n";
        assert_eq!(sum(text, "x", &[("svc", "a")]), 4.0);
        assert_eq!(sum(text, "x", &[("code", "OK")]), 1113.0);
        assert_eq!(sum(text, "x", &[("svc", "a \"q\", b")]), 1000.0);
        assert_eq!(sum(text, "x", &[]), 1119.0);
        assert_eq!(sum(text, "x_total", &[]), 7.0);
        assert_eq!(sum(text, "y", &[]), 0.0);
    }
}
