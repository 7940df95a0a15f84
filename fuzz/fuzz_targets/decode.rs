//! Feeds arbitrary bytes to the frame decoder: it must return a frame, "need
//! more bytes" or an error, never panic, and a frame it returns must encode
//! back to the same bytes.
//!
//! Run: `scripts/fuzz decode` (seeded with the malformed-input corpus that
//! `cargo test -p tunnel` also replays).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tunnel::codec;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((frame, used))) = codec::decode(data) {
        let mut again = BytesMut::new();
        codec::encode(&frame, &mut again).expect("a decoded frame encodes");
        assert_eq!(
            &again[..],
            &data[..used],
            "decode then encode is the identity"
        );
    }
});
