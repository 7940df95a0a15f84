//! Property tests: every message survives encode then decode unchanged, in
//! one piece or fed byte by byte, and random bytes never panic the decoder.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tunnel::codec::{self, Frame};
use tunnel::message::{
    ControlMessage, Drain, HeaderList, Register, Registered, RejectReason, Rejected, RequestHead,
    ResponseHead, StreamErrorKind, StreamKind, Trailers,
};
use tunnel::token::{Secret, TunnelId};

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ -~é✓]{0,40}").unwrap()
}

fn headers() -> impl Strategy<Value = HeaderList> {
    proptest::collection::vec(
        (
            "[a-z][a-z0-9-]{0,20}",
            proptest::collection::vec(any::<u8>(), 0..64),
        ),
        0..12,
    )
}

fn control() -> impl Strategy<Value = ControlMessage> {
    prop_oneof![
        (
            any::<u8>(),
            any::<[u8; 16]>(),
            any::<[u8; 32]>(),
            text(),
            any::<u8>(),
            text()
        )
            .prop_map(|(v, id, s, cid, idx, ver)| {
                ControlMessage::Register(Register {
                    protocol_version: v,
                    tunnel_id: TunnelId(id),
                    secret: Secret(s),
                    connector_id: cid,
                    conn_index: idx,
                    connector_version: ver,
                })
            }),
        (text(), text()).prop_map(
            |(edge_id, location)| ControlMessage::Registered(Registered { edge_id, location })
        ),
        (1u8..=5, text(), any::<u32>()).prop_map(|(code, message, ms)| {
            let reason = [
                RejectReason::BadToken,
                RejectReason::UnknownTunnel,
                RejectReason::UnsupportedVersion,
                RejectReason::Draining,
                RejectReason::Malformed,
            ][code as usize - 1];
            ControlMessage::Rejected(Rejected {
                reason,
                message,
                retry_after: Duration::from_millis(ms.into()),
            })
        }),
        any::<u32>().prop_map(|ms| ControlMessage::Drain(Drain {
            deadline: Duration::from_millis(ms.into())
        })),
        Just(ControlMessage::Unregister),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        control().prop_map(Frame::Control),
        (
            prop_oneof![
                Just(StreamKind::Http),
                Just(StreamKind::WebSocket),
                Just(StreamKind::Tcp)
            ],
            "[A-Z]{1,8}",
            text(),
            text(),
            (any::<bool>(), headers()),
            text(),
            text()
        )
            .prop_map(
                |(kind, method, authority, path, (has_body, headers), client_addr, request_id)| {
                    Frame::RequestHead(RequestHead {
                        kind,
                        method,
                        authority,
                        path,
                        has_body,
                        headers,
                        client_addr,
                        request_id,
                    })
                }
            ),
        (100u16..=999, headers()).prop_map(|(status, headers)| Frame::ResponseHead(
            ResponseHead::Response { status, headers }
        )),
        (1u8..=6).prop_map(|c| {
            let kind = [
                StreamErrorKind::OriginUnreachable,
                StreamErrorKind::OriginTimeout,
                StreamErrorKind::OriginTls,
                StreamErrorKind::OriginProtocol,
                StreamErrorKind::BadRequest,
                StreamErrorKind::Internal,
            ][c as usize - 1];
            Frame::ResponseHead(ResponseHead::Error(kind))
        }),
        proptest::collection::vec(any::<u8>(), 0..4096).prop_map(|b| Frame::Data(Bytes::from(b))),
        headers().prop_map(|h| Frame::Trailers(Trailers(h))),
    ]
}

proptest! {
    #[test]
    fn frames_round_trip(frames in proptest::collection::vec(frame(), 1..8)) {
        let mut buf = BytesMut::new();
        for f in &frames {
            codec::encode(f, &mut buf).unwrap();
        }
        let mut rest = &buf[..];
        for want in &frames {
            let (got, used) = codec::decode(rest).unwrap().unwrap();
            prop_assert_eq!(&got, want);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn every_prefix_is_incomplete_not_an_error(f in frame()) {
        let mut buf = BytesMut::new();
        codec::encode(&f, &mut buf).unwrap();
        for cut in 0..buf.len() {
            prop_assert_eq!(codec::decode(&buf[..cut]), Ok(None));
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode(&bytes);
    }

    #[test]
    fn corrupted_frames_never_panic(f in frame(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut buf = BytesMut::new();
        codec::encode(&f, &mut buf).unwrap();
        let i = pos.index(buf.len());
        buf[i] = byte;
        let _ = codec::decode(&buf);
    }
}
