//! Every page of a list call, in order, with a bound on how many: the one loop over
//! `next_page_token` that weftctl, weft-cni and the Docker plugin share.

use std::future::Future;

use tonic::Status;
use weft_proto::gateway::v1 as pb;

/// At most this many pages are asked for: a server that never stops answering with a next
/// page (a bug, or a hostile one) ends in [`PagesError::TooMany`], not a loop for ever.
pub const PAGES_MAX: usize = 10_000;

/// A list request that asks for one page.
pub trait PagedRequest: Clone {
    fn set_page_token(&mut self, token: String);
}

/// One page of a list answer: its items and the token of the next page ("" at the end).
pub trait Page {
    type Item;
    fn into_parts(self) -> (Vec<Self::Item>, String);
}

/// Why a whole list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PagesError {
    #[error(transparent)]
    Call(#[from] Status),
    #[error("the list has more than {0} pages")]
    TooMany(usize),
}

impl From<PagesError> for crate::error::CliError {
    fn from(e: PagesError) -> Self {
        match e {
            PagesError::Call(st) => st.into(),
            e @ PagesError::TooMany(_) => Self::Api(e.to_string()),
        }
    }
}

/// Every item of the list `req` asks for, all pages in order: `call` asks for one page (it
/// gets its own copy of the request, with the page token set).
pub async fn all_pages<Req, P, F, Fut>(
    mut req: Req,
    mut call: F,
) -> Result<Vec<P::Item>, PagesError>
where
    Req: PagedRequest,
    P: Page,
    F: FnMut(Req) -> Fut,
    Fut: Future<Output = Result<P, Status>>,
{
    let mut all = Vec::new();
    for _ in 0..PAGES_MAX {
        let (items, next) = call(req.clone()).await?.into_parts();
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        req.set_page_token(next);
    }
    Err(PagesError::TooMany(PAGES_MAX))
}

macro_rules! paged {
    ($req:ty, $resp:ty, $items:ident, $item:ty) => {
        impl PagedRequest for $req {
            fn set_page_token(&mut self, token: String) {
                self.page_token = token;
            }
        }
        impl Page for $resp {
            type Item = $item;
            fn into_parts(self) -> (Vec<$item>, String) {
                (self.$items, self.next_page_token)
            }
        }
    };
}

paged!(
    pb::ListNetworksRequest,
    pb::ListNetworksResponse,
    networks,
    pb::Network
);
paged!(
    pb::ListSandboxesRequest,
    pb::ListSandboxesResponse,
    sandboxes,
    pb::Sandbox
);
paged!(pb::ListHostsRequest, pb::ListHostsResponse, hosts, pb::Host);

#[cfg(test)]
mod tests {
    use super::*;

    fn page(items: &[&str], next: &str) -> pb::ListNetworksResponse {
        pb::ListNetworksResponse {
            networks: items
                .iter()
                .map(|n| pb::Network {
                    name: (*n).to_owned(),
                    ..Default::default()
                })
                .collect(),
            next_page_token: next.to_owned(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn every_page_in_order_each_asked_with_the_last_token() {
        let mut asked = Vec::new();
        let all = all_pages(pb::ListNetworksRequest::default(), |req| {
            asked.push(req.page_token.clone());
            let answer = match req.page_token.as_str() {
                "" => page(&["a", "b"], "p2"),
                "p2" => page(&["c"], "p3"),
                _ => page(&[], ""),
            };
            async move { Ok(answer) }
        })
        .await
        .unwrap();
        let names: Vec<_> = all.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(asked, ["", "p2", "p3"]);
    }

    #[tokio::test]
    async fn a_server_that_never_ends_and_a_failed_page_are_errors() {
        let endless = all_pages(pb::ListNetworksRequest::default(), |_| async {
            Ok(page(&[], "again"))
        })
        .await;
        assert!(matches!(endless, Err(PagesError::TooMany(PAGES_MAX))));
        let failed = all_pages(pb::ListNetworksRequest::default(), |req| async move {
            if req.page_token.is_empty() {
                Ok(page(&["a"], "p2"))
            } else {
                Err(Status::unavailable("gone"))
            }
        })
        .await;
        assert!(matches!(failed, Err(PagesError::Call(st)) if st.message() == "gone"));
    }
}
