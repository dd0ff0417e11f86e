//! `weftctl ipam check`: ipam-svc's consistency check (`weft.ipam.v1.IpamService.Check`).

use std::io::Write;

use weft_proto::ipam::v1::{self as ipb, ipam_service_client::IpamServiceClient};

use super::Ctx;
use crate::{
    cli::IpamCmd,
    client::{self, IPAM},
    error::CliError,
    json,
};

/// The report of a check, one line per figure and per problem.
pub fn report(c: &ipb::CheckResponse) -> String {
    let mut text = format!(
        "pools checked: {}\nallocations checked: {}\nproblems: {}\n",
        c.pools_checked, c.allocations_checked, c.problems_count
    );
    for p in &c.problems {
        let kind = ipb::problem::Kind::try_from(p.kind)
            .map_or("KIND_UNSPECIFIED", |k| k.as_str_name())
            .trim_start_matches("KIND_")
            .to_lowercase()
            .replace('_', " ");
        text.push_str(&format!(
            "{kind}: pool={} address={} owners={}: {}\n",
            p.pool_id,
            p.address,
            p.owners.join(","),
            p.detail
        ));
    }
    text
}

/// The admin's certificate in `dir`, when it is there.
fn admin_tls(dir: &std::path::Path) -> Result<Option<weft_identity::ClientTls>, CliError> {
    let admin = weft_identity::Identity::new(weft_identity::Kind::Admin, "admin")
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let files = weft_identity::TlsFiles::in_dir(dir, &admin);
    if !files.cert.exists() {
        return Ok(None);
    }
    weft_identity::ClientTls::new(files, weft_identity::Kind::Ipam)
        .map(Some)
        .map_err(|e| CliError::Usage(e.to_string()))
}

pub async fn run<W: Write>(ctx: &mut Ctx<'_, W>, cmd: IpamCmd) -> Result<(), CliError> {
    let IpamCmd::Check { ipam, tls_dir } = cmd;
    let channel = match admin_tls(&tls_dir)? {
        Some(tls) => {
            let addr = ipam.strip_prefix("http://").unwrap_or(&ipam);
            tls.connect(addr).await.map_err(|e| {
                CliError::Unavailable(format!("cannot reach ipam-svc at {ipam} over TLS: {e}"))
            })?
        }
        None => client::connect(&ipam, IPAM).await?,
    };
    let mut c = IpamServiceClient::new(channel);
    let res = c.check(ipb::CheckRequest {}).await?.into_inner();
    if ctx.json() {
        ctx.json_line(&json::ipam_check(&res))?;
    } else {
        ctx.print(&report(&res))?;
    }
    if res.problems_count > 0 || !res.problems.is_empty() {
        return Err(CliError::Api(format!(
            "ipam check found {} problem(s)",
            res.problems_count.max(res.problems.len() as u64)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_figures_and_problems() {
        let r = report(&ipb::CheckResponse {
            pools_checked: 3,
            allocations_checked: 10,
            problems_count: 1,
            problems: vec![ipb::Problem {
                kind: ipb::problem::Kind::DuplicateAddress.into(),
                pool_id: "p1".into(),
                address: "10.0.0.5".into(),
                owners: vec!["a".into(), "b".into()],
                detail: "held twice".into(),
            }],
        });
        assert_eq!(
            r,
            "pools checked: 3\nallocations checked: 10\nproblems: 1\nduplicate address: pool=p1 address=10.0.0.5 owners=a,b: held twice\n"
        );
    }
}
