//! The edge's request path, from the bytes a client sends to the frame that
//! crosses the tunnel. The input is read as an HTTP/1.1 request head by
//! httparse, hyper's own parser, and turned into an `http::Request` as hyper
//! does; the edge's head building makes the tunnel's `RequestHead` of it,
//! and the codec frames it. Nothing may panic; a head is either refused or
//! framed, and a framed head decodes back to itself without any hop-by-hop
//! header and with a path the connector can append to its origin URL.
#![no_main]

use std::net::SocketAddr;

use bytes::BytesMut;
use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};
use libfuzzer_sys::fuzz_target;
use tunnel::codec::{self, Frame, FrameError};
use tunnel::message::is_hop_by_hop;

use edge::forwarding::Scheme;
use edge::request_head::{ForwardHead, head_from_parts};

/// hyper's default limit on the number of request headers.
const MAX_HEADERS: usize = 100;

fuzz_target!(|data: &[u8]| {
    let Some((parts, has_body)) = hyper_parts(data) else {
        return;
    };
    let client: SocketAddr = "203.0.113.7:50123".parse().unwrap();
    let (method, uri, headers) = (&parts.method, &parts.uri, &parts.headers);
    let Ok(ForwardHead { head, .. }) = head_from_parts(
        method,
        uri,
        headers,
        has_body,
        client,
        "fuzz-1",
        Scheme::Http,
    ) else {
        return;
    };
    assert!(
        head.path.starts_with('/') || head.path == "*",
        "the connector appends this path to its origin URL: {:?}",
        head.path
    );
    // `te: trailers` is the one hop-by-hop field that crosses: gRPC servers
    // require it (RFC 9113 §8.2.2 allows it in HTTP/2).
    assert!(
        head.headers
            .iter()
            .all(|(n, v)| !is_hop_by_hop(n) || (n == "te" && v.eq_ignore_ascii_case(b"trailers"))),
        "a hop-by-hop header crossed the tunnel"
    );

    let frame = Frame::RequestHead(head);
    let mut out = BytesMut::from(&b"before"[..]);
    match codec::encode(&frame, &mut out) {
        Ok(()) => {
            let (decoded, used) = codec::decode(&out[6..])
                .expect("an encoded head decodes")
                .expect("an encoded head is complete");
            assert_eq!(used, out.len() - 6, "the head is one whole frame");
            assert_eq!(decoded, frame, "encode then decode is the identity");
        }
        Err(
            FrameError::TooLarge(_) | FrameError::FieldTooLong(_) | FrameError::TooManyHeaders(_),
        ) => assert_eq!(
            &out[..],
            b"before",
            "a refused frame leaves no bytes behind"
        ),
        Err(e) => panic!("a head built from a valid request does not encode: {e}"),
    }
});

/// What hyper hands the edge for these bytes: the request's parts and
/// whether a body follows; `None` where hyper answers 400 itself.
fn hyper_parts(data: &[u8]) -> Option<(http::request::Parts, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = req.parse(data).ok()? else {
        return None;
    };
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    let uri: Uri = req.path?.parse().ok()?;
    let version = match req.version? {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut builder = Request::builder().method(method).uri(uri).version(version);
    let (mut chunked, mut length) = (false, None::<u64>);
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        if name == http::header::TRANSFER_ENCODING {
            chunked = true;
        } else if name == http::header::CONTENT_LENGTH {
            // hyper refuses a length that is not a number, or two that differ.
            let n = value.to_str().ok()?.trim().parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
        builder = builder.header(name, value);
    }
    let (parts, ()) = builder.body(()).ok()?.into_parts();
    Some((parts, chunked || length.is_some_and(|n| n > 0)))
}
