//! Deterministic pseudo-random bytes, so the origin and a client can agree
//! on a large body's content (and checksum) without storing it.

use bytes::Bytes;

/// Chunk size of generated bodies.
pub const CHUNK: usize = 64 * 1024;

/// The `size` bytes of pattern `seed`, in chunks of at most [`CHUNK`].
pub fn chunks(seed: u64, size: u64) -> impl Iterator<Item = Bytes> + Send + 'static {
    let mut state = seed | 1;
    let mut left = size;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(CHUNK as u64) as usize;
        left -= n as u64;
        let mut buf = vec![0u8; n.div_ceil(8) * 8];
        for word in buf.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        buf.truncate(n);
        Some(Bytes::from(buf))
    })
}

/// SHA-256 of pattern `seed` of `size` bytes, hex.
pub fn sha256(seed: u64, size: u64) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for c in chunks(seed, size) {
        ctx.update(&c);
    }
    hex(ctx.finish().as_ref())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A body of pattern `seed` for a request, and a digest of what it sent, to
/// compare with what comes back.
pub fn tracked_body(
    seed: u64,
    size: u64,
) -> (
    reqwest::Body,
    std::sync::Arc<std::sync::Mutex<ring::digest::Context>>,
) {
    let sent = std::sync::Arc::new(std::sync::Mutex::new(ring::digest::Context::new(
        &ring::digest::SHA256,
    )));
    let tee = sent.clone();
    let stream = futures_util::stream::iter(chunks(seed, size).map(move |c| {
        tee.lock().unwrap().update(&c);
        Ok::<_, std::io::Error>(c)
    }));
    (reqwest::Body::wrap_stream(stream), sent)
}

/// The hex digest of a tracked body, once it was sent.
pub fn finish(sent: std::sync::Arc<std::sync::Mutex<ring::digest::Context>>) -> String {
    hex(sent.lock().unwrap().clone().finish().as_ref())
}
