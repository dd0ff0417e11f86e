//! How large a request may be. Every method of an access table takes requests of at most
//! [`Rule::max_message`] bytes: the bytes of the request body, which are the encoded message and
//! gRPC's 5-byte prefix. The access layer applies the limit once the caller is known and
//! admitted: it reads the body frame by frame, counting, and at the first frame that takes it
//! over the limit refuses the request with RESOURCE_EXHAUSTED, having kept at most the limit.
//! A body within the limit goes on to the service as it was read. The refusal carries no
//! `google.rpc.RetryInfo`, unlike the rate limits': the same request is refused every time.
//! Like theirs, it is not audited (a flood of refusals would flood the audit log).
//!
//! Reading a body whole suits unary requests, and every Weft request is one (a server stream
//! such as Watch has a unary request). [`check_unary`] keeps a server from starting with a method
//! whose requests stream: that one would need a limit per message instead.
//!
//! tonic has a limit of its own (4 MiB by default; OUT_OF_RANGE past it). Each service sets it
//! to the largest limit of its methods ([`limit`]), so that tonic never refuses a request the
//! table allows, and so that it bounds requests on a plaintext server, which has no access
//! table.
//!
//! # The limits
//!
//! Each limit is above the largest request that passes the service's validation, so that a
//! field over its own limit gets the precise INVALID_ARGUMENT naming it and not this refusal,
//! with room to spare for a new field. `gateway/tests/it/sizes.rs` checks the gateway's limits
//! against requests with every field at its maximum length.
//!
//! | limit | methods | the largest request that passes validation |
//! |---|---|---|
//! | [`DEFAULT`]: 64 KiB | every method not below | the gateway's Connect: 11.5 KB (32 aliases of 253 bytes, 16 sysctls), PruneNetworks: 33 KB (two filters); the agent's Attach and Detach: ~20 and ~30 KB; ipam-svc's: ~12 KB (a RequestPool of a CreateNetwork: 64 reserved addresses); dns-svc's: a few names |
//! | [`LISTS_AND_LABELS`]: 128 KiB | the gateway's ListNetworks, ListSandboxes, UpdateNetwork | lists: 85 KB (5 filters of 64 values of 256 bytes); UpdateNetwork: 75 KB (64 labels of 128 + 1024 bytes) |
//! | [`NETWORK`]: 256 KiB | the gateway's CreateNetwork | 169 KB: 8 subnets of 64 reserved addresses named in 128 bytes, and 64 labels |
//! | [`SANDBOX`]: 512 KiB | the gateway's and the agent's CreateSandbox | the gateway's 284 KB: 16 attachments of 32 aliases of 253 bytes, 64 extra hosts, 64 labels; the agent's ~375 KB: the same attachments with their networks' specs and namespace paths, and the files (without the labels) |
//! | [`DESIRED_STATE`]: 256 MiB | the agent's ApplyState (and the agent's read of GetDesiredState) | a host's whole state: ~0.7 KB per sandbox with an endpoint publishing a port, so ~3.6 MB for 5,000 sandboxes, ~70 times less than the limit |

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use tonic::{Status, body::Body};

use crate::{
    access::{Rule, method_descriptors},
    principal::Refusal,
};

/// Requests of most methods.
pub const DEFAULT: usize = 64 << 10;
/// Lists with filters, and a network's new labels.
pub const LISTS_AND_LABELS: usize = 128 << 10;
/// A new network.
pub const NETWORK: usize = 256 << 10;
/// A new sandbox with its attachments.
pub const SANDBOX: usize = 512 << 10;
/// A host's whole desired state.
pub const DESIRED_STATE: usize = 256 << 20;

/// The largest request a method of `service` (`package.Service`) takes by `rules`; [`DEFAULT`]
/// when none of them is of `service`.
pub fn largest(rules: &[Rule], service: &str) -> usize {
    rules
        .iter()
        .filter(|r| {
            r.method
                .strip_prefix('/')
                .and_then(|m| m.strip_prefix(service))
                .is_some_and(|m| m.starts_with('/'))
        })
        .map(|r| r.max_message)
        .max()
        .unwrap_or(DEFAULT)
}

/// `server` with tonic's own decoding limit set to the [`largest`] request its methods take by
/// `rules`; `set` is the generated server's `max_decoding_message_size`.
pub fn limit<S: tonic::server::NamedService>(
    server: S,
    rules: &[Rule],
    set: impl FnOnce(S, usize) -> S,
) -> S {
    set(server, largest(rules, S::NAME))
}

/// What [`check_unary`] found.
#[derive(Debug, thiserror::Error)]
#[error("{} stream their requests, but the access layer reads a request whole to bound its size: such a method needs a limit per message first", .0.join(", "))]
pub struct StreamedRequests(pub Vec<String>);

/// No method of `services` (looked up in `descriptors`, an encoded `FileDescriptorSet`) streams
/// its requests.
pub fn check_unary(services: &[&str], descriptors: &[u8]) -> Result<(), StreamedRequests> {
    let streamed: Vec<String> = method_descriptors(services, descriptors)
        .into_iter()
        .filter(|(_, m)| m.client_streaming())
        .map(|(path, _)| path)
        .collect();
    if streamed.is_empty() {
        Ok(())
    } else {
        Err(StreamedRequests(streamed))
    }
}

/// The refusal of a request larger than `rule` allows.
pub fn too_large(rule: &Rule) -> Refusal {
    Refusal::too_large(format!(
        "the request is too large: {} takes requests of at most {} bytes",
        rule.method.trim_start_matches('/'),
        rule.max_message
    ))
}

/// `req` with its body read, when that holds at most `rule.max_message` bytes; else the status
/// to answer (the refusal, or why the body could not be read).
pub async fn read_within(
    req: http::Request<Body>,
    rule: &Rule,
) -> Result<http::Request<Body>, Status> {
    let (parts, body) = req.into_parts();
    match read(body, rule.max_message).await {
        Ok(body) => Ok(http::Request::from_parts(parts, body)),
        Err(Unread::TooLarge) => Err(too_large(rule).status()),
        Err(Unread::Failed(status)) => Err(status),
    }
}

/// Why [`read`] gave up.
#[derive(Debug)]
pub enum Unread {
    /// The body holds more than the limit.
    TooLarge,
    /// The body could not be read (the client went away).
    Failed(Status),
}

/// `body` read to its end when it holds at most `limit` bytes of data, as a body that gives the
/// same frames again. Stops at the first frame that would take it over `limit`, which is never
/// kept.
pub async fn read(mut body: Body, limit: usize) -> Result<Body, Unread> {
    let mut frames = VecDeque::new();
    let mut len = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(Unread::Failed)?;
        if let Some(data) = frame.data_ref() {
            len = len.saturating_add(data.len());
            if len > limit {
                return Err(Unread::TooLarge);
            }
        }
        frames.push_back(frame);
    }
    Ok(Body::new(Replay { frames, len }))
}

/// A body read already: its frames again, in order.
#[derive(Debug)]
struct Replay {
    frames: VecDeque<Frame<Bytes>>,
    /// Bytes of data left.
    len: usize,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = self.frames.pop_front();
        if let Some(data) = frame.as_ref().and_then(Frame::data_ref) {
            self.len -= data.len();
        }
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// A body of the given frames, then (when `endless`) the last one forever; counts the
    /// frames it gave.
    #[derive(Debug)]
    struct Frames {
        frames: VecDeque<Frame<Bytes>>,
        endless: Option<Bytes>,
        given: Arc<AtomicUsize>,
    }

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            let next = self
                .frames
                .pop_front()
                .or_else(|| self.endless.clone().map(Frame::data));
            if next.is_some() {
                self.given.fetch_add(1, Ordering::Relaxed);
            }
            Poll::Ready(next.map(Ok))
        }
    }

    fn body(chunks: &[usize]) -> (Body, Arc<AtomicUsize>) {
        let given = Arc::new(AtomicUsize::new(0));
        let frames = chunks
            .iter()
            .enumerate()
            .map(|(i, &n)| Frame::data(Bytes::from(vec![i as u8; n])))
            .collect();
        let b = Frames {
            frames,
            endless: None,
            given: given.clone(),
        };
        (Body::new(b), given)
    }

    async fn collect(mut body: Body) -> (Vec<u8>, Option<http::HeaderMap>) {
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(f) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            let f = f.unwrap();
            if let Some(d) = f.data_ref() {
                data.extend_from_slice(d);
            }
            if let Ok(t) = f.into_trailers() {
                trailers = Some(t);
            }
        }
        (data, trailers)
    }

    #[tokio::test]
    async fn a_body_of_exactly_the_limit_passes_whole_and_one_byte_more_is_refused() {
        let (b, _) = body(&[1000]);
        let whole = read(b, 1000).await.unwrap();
        assert_eq!(whole.size_hint().exact(), Some(1000));
        assert_eq!(collect(whole).await.0, vec![0u8; 1000]);
        let (b, _) = body(&[1001]);
        assert!(matches!(read_err(b, 1000).await, Unread::TooLarge));
        let (b, _) = body(&[]);
        assert!(collect(read(b, 0).await.unwrap()).await.0.is_empty());
    }

    async fn read_err(b: Body, limit: usize) -> Unread {
        match read(b, limit).await {
            Ok(_) => panic!("read a body over {limit} bytes"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn a_body_split_over_many_frames_is_counted_whole_and_given_again_in_order() {
        // 1000 frames of 7 bytes: 7000 in all.
        let chunks = [7; 1000];
        let (b, _) = body(&chunks);
        let (data, _) = collect(read(b, 7000).await.unwrap()).await;
        let expected: Vec<u8> = (0..1000).flat_map(|i| [i as u8; 7]).collect();
        assert_eq!(data, expected);
        let (b, given) = body(&chunks);
        assert!(matches!(read_err(b, 6999).await, Unread::TooLarge));
        assert_eq!(given.load(Ordering::Relaxed), 1000, "refused at the last");
    }

    #[tokio::test]
    async fn reading_stops_at_the_first_frame_over_the_limit() {
        let given = Arc::new(AtomicUsize::new(0));
        let endless = Frames {
            frames: VecDeque::new(),
            endless: Some(Bytes::from(vec![0u8; 16 << 10])),
            given: given.clone(),
        };
        assert!(matches!(
            read_err(Body::new(endless), 64 << 10).await,
            Unread::TooLarge
        ));
        // Four frames fill the limit; the fifth passes it and ends the reading.
        assert_eq!(given.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn trailers_are_kept_and_a_failed_body_is_its_status() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-t", "1".parse().unwrap());
        let b = Frames {
            frames: [
                Frame::data(Bytes::from_static(b"abc")),
                Frame::trailers(trailers.clone()),
            ]
            .into(),
            endless: None,
            given: Arc::default(),
        };
        let (data, got) = collect(read(Body::new(b), 3).await.unwrap()).await;
        assert_eq!(data, b"abc");
        assert_eq!(got, Some(trailers));

        #[derive(Debug)]
        struct Broken;
        impl http_body::Body for Broken {
            type Data = Bytes;
            type Error = Status;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
                Poll::Ready(Some(Err(Status::cancelled("gone"))))
            }
        }
        let Unread::Failed(st) = read_err(Body::new(Broken), 10).await else {
            panic!("not a failure");
        };
        assert_eq!(st.code(), tonic::Code::Cancelled);
    }

    /// Lets in whoever the `authorization` header names, as an operator.
    struct ByHeader;

    impl crate::access::Authenticate for ByHeader {
        fn authenticate<'a>(
            &'a self,
            headers: &'a http::HeaderMap,
            _: &'a http::Extensions,
        ) -> crate::access::BoxFuture<'a, Result<crate::access::Principal, Refusal>> {
            let who = headers
                .get("authorization")
                .map(|v| crate::access::Principal {
                    name: v.to_str().unwrap_or("").to_owned(),
                    role: crate::access::Role::Operator,
                    credential: crate::access::Credential::Token,
                })
                .ok_or_else(|| Refusal::unauthenticated("no credentials"));
            Box::pin(async move { who })
        }
    }

    #[tokio::test]
    async fn the_access_layer_checks_the_caller_first_then_the_size() {
        use tower::{Layer as _, ServiceExt as _};
        let rules = [Rule::write("/p.S/Put").max_message(100)];
        let access = crate::access::Access::new(&rules, Arc::new(ByHeader));
        // Answers with the length of the body it got.
        let inner = tower::service_fn(|req: http::Request<Body>| async move {
            let (data, _) = collect(req.into_body()).await;
            let res = http::Response::builder().header("x-len", data.len());
            Ok::<_, Infallible>(res.body(Body::empty()).unwrap())
        });
        let svc = crate::access::AccessLayer::new(access).layer(inner);
        let call = |n: usize, who: Option<&str>| {
            let mut req = http::Request::builder().uri("http://x/p.S/Put");
            if let Some(who) = who {
                req = req.header("authorization", who);
            }
            let (b, _) = body(&[n / 2, n - n / 2]);
            svc.clone().oneshot(req.body(b).unwrap())
        };
        let status = |res: http::Response<Body>| Status::from_header_map(res.headers());

        let res = call(100, Some("ci")).await.unwrap();
        assert_eq!(res.headers().get("x-len").unwrap(), "100", "{res:?}");
        let st = status(call(101, Some("ci")).await.unwrap()).unwrap();
        assert_eq!(st.code(), tonic::Code::ResourceExhausted, "{st:?}");
        assert!(st.message().contains("at most 100 bytes"), "{st:?}");
        let st = status(call(101, None).await.unwrap()).unwrap();
        assert_eq!(st.code(), tonic::Code::Unauthenticated, "{st:?}");
    }

    #[test]
    fn the_refusal_names_the_method_and_its_limit_without_a_retry_time() {
        let rule = Rule::read("/p.S/Get").max_message(NETWORK);
        let r = too_large(&rule);
        assert_eq!(r.code, tonic::Code::ResourceExhausted);
        assert_eq!(r.retry_after, None);
        assert_eq!(
            r.message,
            "the request is too large: p.S/Get takes requests of at most 262144 bytes"
        );
    }

    #[test]
    fn a_service_takes_the_largest_request_of_its_methods() {
        let rules = [
            Rule::read("/p.S/Get"),
            Rule::write("/p.S/Put").max_message(SANDBOX),
            Rule::write("/p.Sx/Put").max_message(DESIRED_STATE),
        ];
        assert_eq!(Rule::read("/p.S/Get").max_message, DEFAULT);
        assert_eq!(largest(&rules, "p.S"), SANDBOX);
        assert_eq!(largest(&rules, "p.Sx"), DESIRED_STATE);
        assert_eq!(largest(&rules, "p.T"), DEFAULT);
    }

    #[test]
    fn a_method_whose_requests_stream_is_found() {
        use prost::Message as _;
        use prost_types::{
            FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
        };
        let method = |name: &str, client_streaming| MethodDescriptorProto {
            name: Some(name.into()),
            client_streaming: Some(client_streaming),
            ..Default::default()
        };
        let set = FileDescriptorSet {
            file: vec![FileDescriptorProto {
                package: Some("p".into()),
                service: vec![ServiceDescriptorProto {
                    name: Some("S".into()),
                    method: vec![method("Get", false), method("Upload", true)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let StreamedRequests(found) = check_unary(&["p.S"], &set).unwrap_err();
        assert_eq!(found, ["/p.S/Upload"]);
        assert!(check_unary(&["p.T"], &set).is_ok());
    }

    #[test]
    fn no_weft_method_streams_its_requests() {
        let services: Vec<String> = {
            use prost::Message as _;
            let set =
                prost_types::FileDescriptorSet::decode(weft_proto::FILE_DESCRIPTOR_SET).unwrap();
            set.file
                .iter()
                .flat_map(|f| {
                    f.service
                        .iter()
                        .map(move |s| format!("{}.{}", f.package(), s.name()))
                })
                .collect()
        };
        let names: Vec<&str> = services.iter().map(String::as_str).collect();
        assert!(names.len() >= 4, "{names:?}");
        check_unary(&names, weft_proto::FILE_DESCRIPTOR_SET).unwrap();
    }
}
