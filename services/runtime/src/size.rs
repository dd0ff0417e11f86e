//! How large a request may be. Every method of an access table takes requests of at most its
//! rule's `max_message` bytes ([`crate::access::Rule`]): bytes of the request body, which are
//! the encoded message and gRPC's 5-byte prefix. The access layer applies the limit once the
//! caller is known and admitted: it reads the body frame by frame, counting, and at the first
//! frame that takes it over the limit refuses the request with RESOURCE_EXHAUSTED, having kept
//! at most the limit. A body within the limit goes on to the service as it was read. The
//! refusal carries no `google.rpc.RetryInfo`, unlike the rate limits': the same request is
//! refused every time. Like theirs, it is not audited (a flood of refusals would flood the
//! audit log).
//!
//! Reading a body whole suits unary requests, and every Weft request is one (a server stream
//! such as Watch has a unary request). [`check_unary`] keeps a server from starting with a method
//! whose requests stream: that one would need a limit per message instead.
//!
//! tonic has a limit of its own (4 MiB by default; OUT_OF_RANGE past it). Each service sets it
//! to the largest limit of its methods ([`crate::grpc::limit_requests`]), so that tonic never
//! refuses a request the table allows, and so that it bounds requests on a plaintext server,
//! which has no access table.
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

use crate::principal::Refusal;

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

/// What [`check_unary`] found.
#[derive(Debug, thiserror::Error)]
#[error("{} stream their requests, but the access layer reads a request whole to bound its size: such a method needs a limit per message first", .0.join(", "))]
pub struct StreamedRequests(pub Vec<String>);

/// None of `methods` (`/package.Service/Method` with its descriptor) streams its requests.
pub fn check_unary(
    methods: impl IntoIterator<Item = (String, prost_types::MethodDescriptorProto)>,
) -> Result<(), StreamedRequests> {
    let streamed: Vec<String> = methods
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

/// The refusal of a request to `method` (`/package.Service/Method`) larger than its `limit`.
fn too_large(method: &str, limit: usize) -> Refusal {
    Refusal::too_large(format!(
        "the request is too large: {} takes requests of at most {limit} bytes",
        method.trim_start_matches('/'),
    ))
}

/// `req` to `method` with its body read, when that holds at most `limit` bytes; else the status
/// to answer (the refusal, or why the body could not be read).
pub async fn read_within(
    req: http::Request<Body>,
    method: &str,
    limit: usize,
) -> Result<http::Request<Body>, Status> {
    let (parts, body) = req.into_parts();
    match read(body, limit).await {
        Ok(body) => Ok(http::Request::from_parts(parts, body)),
        Err(Unread::TooLarge) => Err(too_large(method, limit).status()),
        Err(Unread::Failed(status)) => Err(status),
    }
}

/// Why [`read`] gave up.
#[derive(Debug)]
enum Unread {
    /// The body holds more than the limit.
    TooLarge,
    /// The body could not be read (the client went away).
    Failed(Status),
}

/// `body` read to its end when it holds at most `limit` bytes of data, as a body that gives the
/// same frames again. Stops at the first frame that would take it over `limit`, which is never
/// kept.
async fn read(mut body: Body, limit: usize) -> Result<Body, Unread> {
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

    #[test]
    fn the_refusal_names_the_method_and_its_limit_without_a_retry_time() {
        let r = too_large("/p.S/Get", NETWORK);
        assert_eq!(r.code, tonic::Code::ResourceExhausted);
        assert_eq!(r.retry_after, None);
        assert_eq!(
            r.message,
            "the request is too large: p.S/Get takes requests of at most 262144 bytes"
        );
    }

    #[test]
    fn a_method_whose_requests_stream_is_found() {
        use prost_types::MethodDescriptorProto;
        let method = |name: &str, client_streaming| {
            let m = MethodDescriptorProto {
                name: Some(name.into()),
                client_streaming: Some(client_streaming),
                ..Default::default()
            };
            (format!("/p.S/{name}"), m)
        };
        let StreamedRequests(found) =
            check_unary([method("Get", false), method("Upload", true)]).unwrap_err();
        assert_eq!(found, ["/p.S/Upload"]);
        assert!(check_unary([method("Get", false)]).is_ok());
    }
}
