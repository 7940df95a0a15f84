//! Feeds arbitrary bytes to the WebSocket frame reader, as the edge (server)
//! and as `connector access` (client) read them: it must return data, a
//! ping, a Close, "need more" or an error, never panic, and never hand out
//! more payload bytes than it was given.
//!
//! Run: `scripts/fuzz websocket`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tunnel::websocket::{Event, FrameReader, Role};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the output size, so short reads are covered.
    let Some((&size, wire)) = data.split_first() else {
        return;
    };
    for role in [Role::Server, Role::Client] {
        let mut reader = FrameReader::new(role);
        let mut input = BytesMut::from(wire);
        let mut out = vec![0u8; usize::from(size) + 1];
        let mut delivered = 0;
        loop {
            match reader.next(&mut input, &mut out) {
                Ok(Event::Data(n)) => {
                    assert!(n > 0 && n <= out.len());
                    delivered += n;
                }
                Ok(Event::Ping(p)) => assert!(p.len() <= 125),
                Ok(Event::Close) | Ok(Event::NeedMore) | Err(_) => break,
            }
        }
        assert!(delivered <= wire.len());
    }
});
