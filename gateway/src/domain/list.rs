//! List filters, in Docker's manner: several values of one filter match any of them (OR),
//! different filters must all match (AND), except `label` whose values must all match.

use std::collections::BTreeMap;

use weft_runtime::FieldViolation;

use super::{
    check::Violations, endpoint::EndpointRecord, host::HostRecord, network::NetworkRecord,
    sandbox::SandboxRecord,
};

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
