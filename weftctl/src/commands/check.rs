//! `weftctl check`: the gateway's consistency check (`weft.gateway.v1.CheckService`, role
//! admin): the store against IPAM, and every host's kernel against its desired state.

use std::io::Write;

use weft_proto::gateway::v1::{self as pb, check_service_client::CheckServiceClient};

use super::Ctx;
use crate::{error::CliError, json};

/// The report of a check: one line per figure, then one per problem.
pub fn report(c: &pb::CheckConsistencyResponse) -> String {
    let mut text = format!(
        "hosts checked: {}\nleaked pools: {}\nleaked addresses: {}\n\
         endpoints without their addresses: {}\noperations pending: {}\nhosts with drift: {}\n",
        c.hosts_checked,
        c.leaked_pools_total,
        c.leaked_addresses_total,
        c.endpoints_without_address_total,
        c.operations_pending,
        c.drift.len()
    );
    for p in &c.leaked_pools {
        text.push_str(&format!("leaked pool: {p}\n"));
    }
    for a in &c.leaked_addresses {
        text.push_str(&format!("leaked address: {a}\n"));
    }
    for e in &c.endpoints_without_address {
        text.push_str(&format!("endpoint without its addresses: {e}\n"));
    }
    for d in &c.drift {
        if !d.error.is_empty() {
            text.push_str(&format!("host {}: {}\n", d.host, d.error));
        }
        for change in &d.changes {
            text.push_str(&format!("host {} drift: {change}\n", d.host));
        }
    }
    text
}

/// How many problems the check found (a pending operation counts: ask again once quiet).
pub fn problems(c: &pb::CheckConsistencyResponse) -> u64 {
    c.leaked_pools_total
        + c.leaked_addresses_total
        + c.endpoints_without_address_total
        + c.operations_pending
        + c.drift.iter().map(|d| d.changes_total.max(1)).sum::<u64>()
}

pub async fn run<W: Write>(ctx: &mut Ctx<'_, W>) -> Result<(), CliError> {
    let mut c = CheckServiceClient::new(ctx.gateway().await?);
    let res = c
        .check_consistency(pb::CheckConsistencyRequest {})
        .await?
        .into_inner();
    if ctx.json() {
        ctx.json_line(&json::consistency(&res))?;
    } else {
        ctx.print(&report(&res))?;
    }
    match problems(&res) {
        0 => Ok(()),
        n => Err(CliError::Api(format!("the check found {n} problem(s)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_figures_then_each_problem_and_counts_them() {
        let c = pb::CheckConsistencyResponse {
            leaked_addresses: vec!["p1 10.0.0.5 (e1)".into()],
            leaked_addresses_total: 1,
            endpoints_without_address: vec![],
            endpoints_without_address_total: 0,
            operations_pending: 2,
            drift: vec![pb::HostDrift {
                host: "h1".into(),
                changes: vec!["created link wv1 (owner e2): missing".into()],
                changes_total: 1,
                error: String::new(),
            }],
            hosts_checked: 1,
            leaked_pools: vec!["n1/0 10.9.0.0/24".into()],
            leaked_pools_total: 1,
        };
        assert_eq!(
            report(&c),
            "hosts checked: 1\nleaked pools: 1\nleaked addresses: 1\n\
             endpoints without their addresses: 0\noperations pending: 2\nhosts with drift: 1\n\
             leaked pool: n1/0 10.9.0.0/24\nleaked address: p1 10.0.0.5 (e1)\n\
             host h1 drift: created link wv1 (owner e2): missing\n"
        );
        assert_eq!(problems(&c), 5);
        assert_eq!(problems(&pb::CheckConsistencyResponse::default()), 0);
    }
}
