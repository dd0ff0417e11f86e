//! List filters, in Docker's manner: several values of one filter match any of them (OR),
//! different filters must all match (AND), except `label` whose values must all match; and
//! pages of lists sorted by name.

use std::collections::BTreeMap;

use weft_runtime::FieldViolation;

use super::{
    check::{Violations, check_text},
    endpoint::EndpointRecord,
    host::HostRecord,
    limits::{DEFAULT_PAGE_SIZE, MAX_FILTER_VALUE, MAX_FILTER_VALUES, MAX_PAGE_SIZE},
    network::NetworkRecord,
    sandbox::SandboxRecord,
};

/// Each filter: at most [`MAX_FILTER_VALUES`] values of at most [`MAX_FILTER_VALUE`] bytes.
fn check_filters(filters: &[(&str, &[String])], errs: &mut Violations) {
    for (field, values) in filters {
        if errs.count(field, values.len(), MAX_FILTER_VALUES) {
            for (i, v) in values.iter().enumerate() {
                errs.check(check_text(&format!("{field}[{i}]"), v, MAX_FILTER_VALUE));
            }
        }
    }
}

/// `key` or `key=value` filters: a key is required.
pub fn check_label_filters(field: &str, filters: &[String]) -> Vec<FieldViolation> {
    filters
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_empty() || l.starts_with('='))
        .map(|(i, l)| FieldViolation::new(format!("{field}[{i}]"), l, "expected key or key=value"))
        .collect()
}

/// `key` (present) or `key=value` (present with that value) against labels.
pub fn label_matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|lv| lv == v),
        None => labels.contains_key(filter),
    }
}

/// Empty matches everything; else any value must satisfy `pred`.
fn any(values: &[String], pred: impl Fn(&str) -> bool) -> bool {
    values.is_empty() || values.iter().any(|v| pred(v))
}

/// ListNetworks' filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkFilter {
    /// Substrings of the name.
    pub name: Vec<String>,
    /// Id prefixes.
    pub id: Vec<String>,
    pub driver: Vec<String>,
    pub label: Vec<String>,
    pub scope: Vec<String>,
}

impl NetworkFilter {
    pub fn validate(self) -> Result<Self, Vec<FieldViolation>> {
        let mut errs = Violations::default();
        check_filters(
            &[
                ("name", &self.name),
                ("id", &self.id),
                ("driver", &self.driver),
                ("label", &self.label),
                ("scope", &self.scope),
            ],
            &mut errs,
        );
        errs.extend(check_label_filters("label", &self.label));
        errs.finish(self)
    }

    pub fn matches(&self, n: &NetworkRecord) -> bool {
        any(&self.name, |v| n.name.contains(v))
            && any(&self.id, |v| n.id.starts_with(v))
            && any(&self.driver, |v| n.driver == v)
            && any(&self.scope, |v| n.scope == v)
            && self.label.iter().all(|l| label_matches(&n.labels, l))
    }
}

/// ListSandboxes' filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFilter {
    /// Substrings of the name.
    pub name: Vec<String>,
    pub host: Vec<String>,
    /// Network names or id prefixes.
    pub network: Vec<String>,
    /// Container id prefixes.
    pub container_id: Vec<String>,
    pub label: Vec<String>,
}

impl SandboxFilter {
    pub fn validate(self) -> Result<Self, Vec<FieldViolation>> {
        let mut errs = Violations::default();
        check_filters(
            &[
                ("name", &self.name),
                ("host", &self.host),
                ("network", &self.network),
                ("container_id", &self.container_id),
                ("label", &self.label),
            ],
            &mut errs,
        );
        errs.extend(check_label_filters("label", &self.label));
        errs.finish(self)
    }

    /// What can be decided from the sandbox alone.
    pub fn matches_sandbox(&self, s: &SandboxRecord) -> bool {
        any(&self.name, |v| s.name.contains(v))
            && any(&self.host, |v| s.host == v)
            && any(&self.container_id, |v| s.container_id.starts_with(v))
            && self.label.iter().all(|l| label_matches(&s.labels, l))
    }

    /// The network filter, against the endpoints the sandbox shows.
    pub fn matches_endpoints(&self, endpoints: &[EndpointRecord]) -> bool {
        any(&self.network, |v| {
            endpoints
                .iter()
                .any(|e| e.network_name == v || e.network_id.starts_with(v))
        })
    }
}

/// ListHosts' filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFilter {
    /// Exact names.
    pub name: Vec<String>,
    /// Only hosts up (`Some(true)`) or down (`Some(false)`).
    pub up: Option<bool>,
}

impl HostFilter {
    pub fn matches(&self, h: &HostRecord) -> bool {
        any(&self.name, |v| h.name == v) && self.up.is_none_or(|up| h.up == up)
    }
}

/// One page of a list sorted by name: at most `size` items after the name `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub size: usize,
    /// The last name of the previous page (from its token).
    pub after: Option<String>,
}

/// What a page token says: the list it belongs to and the last name it showed, hex-encoded so
/// that it is opaque and safe in any transport.
const TOKEN_VERSION: &str = "v1";

impl Page {
    /// `page_size` 0 is [`DEFAULT_PAGE_SIZE`], more than [`MAX_PAGE_SIZE`] is refused; a token
    /// must be one this list (`kind`) gave.
    pub fn parse(kind: &str, size: u32, token: &str) -> Result<Self, Vec<FieldViolation>> {
        let mut errs = Violations::default();
        if size > MAX_PAGE_SIZE {
            errs.add(
                "page_size",
                size.to_string(),
                format!("at most {MAX_PAGE_SIZE}"),
            );
        }
        let after = if token.is_empty() {
            None
        } else {
            let name = decode_hex(token).and_then(|text| {
                let rest = text.strip_prefix(&format!("{TOKEN_VERSION}:{kind}:"))?;
                (!rest.is_empty()).then(|| rest.to_owned())
            });
            if name.is_none() {
                errs.add(
                    "page_token",
                    token,
                    format!("not a page token of this list ({kind}): pass next_page_token back as it came"),
                );
            }
            name
        };
        let size = if size == 0 { DEFAULT_PAGE_SIZE } else { size };
        errs.finish(Self {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            after,
        })
    }

    /// The items of this page among `sorted` (sorted by `name`), and the token of the next
    /// page (empty on the last page).
    pub fn take<T>(
        &self,
        kind: &str,
        sorted: impl IntoIterator<Item = T>,
        name: impl Fn(&T) -> &str,
    ) -> (Vec<T>, String) {
        let mut items: Vec<T> = sorted
            .into_iter()
            .filter(|t| self.after.as_deref().is_none_or(|a| name(t) > a))
            .take(self.size + 1)
            .collect();
        if items.len() <= self.size {
            return (items, String::new());
        }
        items.truncate(self.size);
        let next = items
            .last()
            .map(|t| encode_hex(&format!("{TOKEN_VERSION}:{kind}:{}", name(t))))
            .unwrap_or_default();
        (items, next)
    }

    /// Whether a name sorts after this page's start (for lists read item by item).
    pub fn starts_before(&self, name: &str) -> bool {
        self.after.as_deref().is_none_or(|a| name > a)
    }

    /// The token of a page that ends at `name`.
    pub fn token_after(kind: &str, name: &str) -> String {
        encode_hex(&format!("{TOKEN_VERSION}:{kind}:{name}"))
    }
}

fn encode_hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) || token.len() > 2 * 1024 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_a_sorted_list_once() {
        let names: Vec<String> = (0..7).map(|i| format!("n{i}")).collect();
        let mut page = Page::parse("networks", 3, "").unwrap();
        let mut seen = Vec::new();
        loop {
            let (items, next) = page.take("networks", names.iter(), |n| n.as_str());
            seen.extend(items.into_iter().cloned());
            if next.is_empty() {
                break;
            }
            page = Page::parse("networks", 3, &next).unwrap();
        }
        assert_eq!(seen, names);
    }

    #[test]
    fn bad_tokens_and_sizes_are_refused() {
        let token = Page::token_after("networks", "a");
        assert!(Page::parse("networks", 0, &token).is_ok());
        assert_eq!(Page::parse("networks", 0, "").unwrap().size, 100);
        for bad in ["zz", "abc", &Page::token_after("sandboxes", "a"), "7631"] {
            let e = Page::parse("networks", 0, bad).unwrap_err();
            assert_eq!(e[0].field, "page_token", "{bad}");
        }
        assert_eq!(
            Page::parse("networks", 1001, "").unwrap_err()[0].field,
            "page_size"
        );
    }
}
