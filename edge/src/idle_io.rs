//! A public connection whose client stops reading: hyper would wait forever
//! to write the response, holding the connection, its tunnel stream and its
//! tunnel's request slot. [`WriteIdle`] fails a write that makes no
//! progress for the body idle timeout, so the connection ends instead.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A stream whose writes fail after `idle` without progress.
#[derive(Debug)]
pub struct WriteIdle<S> {
    inner: S,
    idle: Duration,
    /// Set while a write waits; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Counts the writes given up on.
    timeouts: IntCounter,
}

impl<S> WriteIdle<S> {
    /// Wraps `inner`; `timeouts` counts the writes given up on.
    pub fn new(inner: S, idle: Duration, timeouts: IntCounter) -> Self {
        Self {
            inner,
            idle,
            stalled: None,
            timeouts,
        }
    }

    /// What a write that returned `poll` means, with the stall timer.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let idle = self.idle;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if timer.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            self.timeouts.inc();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for the body idle timeout",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteIdle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteIdle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_peer_that_reads_nothing_fails_the_write_after_the_idle_time() {
        // A pipe whose far end never reads: writes stop once it is full.
        let (near, _far) = tokio::io::duplex(1024);
        let counter = IntCounter::new("t", "t").unwrap();
        let mut w = WriteIdle::new(near, Duration::from_millis(200), counter.clone());
        let big = vec![0u8; 64 << 10];
        let err = tokio::time::timeout(Duration::from_secs(10), w.write_all(&big))
            .await
            .expect("the write gives up")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(counter.get(), 1);
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_not_cut() {
        use tokio::io::AsyncReadExt;
        let (near, mut far) = tokio::io::duplex(1024);
        let counter = IntCounter::new("t", "t").unwrap();
        let mut w = WriteIdle::new(near, Duration::from_millis(500), counter.clone());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut n = 0;
            while n < 8192 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                n += far.read(&mut buf).await.unwrap();
            }
        });
        w.write_all(&[1u8; 8192]).await.unwrap();
        reader.await.unwrap();
        assert_eq!(counter.get(), 0);
    }
}
