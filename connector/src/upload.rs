//! The request body on its way from the tunnel to the origin, watched.
//!
//! The origin's response timer must not run while the upload still flows (a
//! large upload to an origin that reads the whole body first is not a slow
//! origin), so the body reports when it is complete. A stalled upload is
//! bounded separately by an idle timeout: a read from the tunnel that brings
//! nothing for that long ends the body with an error (the client or the edge
//! stopped sending), and [`Upload::wait_response`] ends a request whose origin
//! stops taking the body for that long (the origin stopped reading).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Empty, StreamBody};
use tokio::sync::watch;
use tokio::time::Instant;
use tunnel::io::{BodyPart, BodyReader, IoError};
use tunnel::message::Trailers;

/// Where the upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    /// Bytes still to come; `reading` is true while we wait on the tunnel
    /// (false while the origin has not asked for more).
    Streaming {
        /// Waiting on the tunnel, not on the origin.
        reading: bool,
    },
    /// The whole body was handed to the origin.
    Done,
    /// Nothing came from the tunnel for the idle timeout.
    Stalled,
    /// The tunnel stream failed (the edge reset it: the client went away).
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    state: UploadState,
    /// When `state` last changed or bytes last moved.
    since: Instant,
}

/// Why the body ended early, as the HTTP client sees it.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// No bytes from the tunnel for this long.
    #[error("request body stalled: nothing for {0:?}")]
    Stalled(Duration),
    /// The tunnel stream failed.
    #[error("request body from the tunnel failed: {0}")]
    Tunnel(#[from] IoError),
}

/// How waiting for the origin's response ended.
#[derive(Debug)]
pub enum Waited<T> {
    /// The origin answered (or the client library failed).
    Response(T),
    /// The body was complete and the origin did not answer within the
    /// response timeout.
    ResponseTimeout,
    /// The origin stopped taking the body for the idle timeout.
    OriginStalled,
    /// The upload ended early: [`UploadState::Stalled`] or [`UploadState::Failed`].
    Upload(UploadState),
}

/// The watching side of a request body.
#[derive(Debug, Clone)]
pub struct Upload {
    rx: watch::Receiver<Progress>,
    idle: Duration,
}

/// Feeds the body and reports progress; the report says `Done` also when
/// the HTTP client drops the body after the last byte of a known length
/// without asking for its end.
struct Feed {
    reader: BodyReader,
    tx: watch::Sender<Progress>,
    idle: Duration,
}

impl Feed {
    fn set(&self, state: UploadState) {
        self.tx.send_modify(|p| {
            p.state = state;
            p.since = Instant::now();
        });
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.tx.send_if_modified(|p| {
            let streaming = matches!(p.state, UploadState::Streaming { .. });
            if streaming {
                p.state = UploadState::Done;
                p.since = Instant::now();
            }
            streaming
        });
    }
}

/// The body of an origin request: none, or the tunnel's (see [`body`]).
pub type RequestBody = Either<Empty<Bytes>, UnsyncBoxBody<Bytes, UploadError>>;

/// The body of a request that has none.
pub fn no_body() -> RequestBody {
    Either::Left(Empty::new())
}

/// The body for the origin request and its watcher.
pub fn body(reader: BodyReader, idle: Duration) -> (RequestBody, Upload) {
    let (tx, rx) = watch::channel(Progress {
        state: UploadState::Streaming { reading: false },
        since: Instant::now(),
    });
    let feed = Feed { reader, tx, idle };
    let stream = futures_util::stream::unfold(Some(feed), |feed| async move {
        let mut feed = feed?;
        feed.set(UploadState::Streaming { reading: true });
        match tokio::time::timeout(feed.idle, feed.reader.next()).await {
            Ok(Ok(Some(BodyPart::Data(b)))) => {
                feed.set(UploadState::Streaming { reading: false });
                Some((Ok::<_, UploadError>(Frame::data(b)), Some(feed)))
            }
            // Request trailers (gRPC over h2 sends them) end the body:
            // hyper sends them to an HTTP/2 origin and leaves them out for
            // HTTP/1.1, where no `Trailer` header announced them.
            Ok(Ok(Some(BodyPart::Trailers(t)))) => {
                feed.set(UploadState::Done);
                Some((Ok(Frame::trailers(trailer_map(t))), Some(feed)))
            }
            Ok(Ok(None)) => {
                feed.set(UploadState::Done);
                None
            }
            Ok(Err(e)) => {
                feed.set(UploadState::Failed);
                Some((Err(UploadError::Tunnel(e)), None))
            }
            Err(_) => {
                feed.set(UploadState::Stalled);
                let idle = feed.idle;
                Some((Err(UploadError::Stalled(idle)), None))
            }
        }
    });
    (
        Either::Right(StreamBody::new(stream).boxed_unsync()),
        Upload { rx, idle },
    )
}

/// Trailers from the tunnel as hyper takes them; a field that is not valid
/// HTTP (an edge bug) is left out rather than failing the request.
fn trailer_map(t: Trailers) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(t.0.len());
    for (name, value) in t.0 {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_maybe_shared(Bytes::from(value)),
        ) {
            map.append(n, v);
        }
    }
    map
}

impl Upload {
    /// The upload's state now.
    pub fn state(&self) -> UploadState {
        self.rx.borrow().state
    }

    /// Waits for the origin's answer to a request with this body: no
    /// response timer while the body flows (the idle timeouts bound a
    /// stall), then `response_timeout` from the moment the body is complete.
    pub async fn wait_response<T>(
        mut self,
        exec: impl Future<Output = T>,
        response_timeout: Duration,
    ) -> Waited<T> {
        tokio::pin!(exec);
        loop {
            let p = *self.rx.borrow_and_update();
            let origin_stall_at = match p.state {
                UploadState::Done => break,
                UploadState::Stalled | UploadState::Failed => return Waited::Upload(p.state),
                UploadState::Streaming { reading: true } => None,
                UploadState::Streaming { reading: false } => Some(p.since + self.idle),
            };
            tokio::select! {
                r = &mut exec => return Waited::Response(r),
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        // The feed is gone, so its last word was seen.
                        break;
                    }
                }
                _ = sleep_until_opt(origin_stall_at) => return Waited::OriginStalled,
            }
        }
        match tokio::time::timeout(response_timeout, exec).await {
            Ok(r) => Waited::Response(r),
            Err(_) => Waited::ResponseTimeout,
        }
    }
}

/// Waits for a request without a body: the response timer starts now.
pub async fn wait_response_no_body<T>(
    exec: impl Future<Output = T>,
    response_timeout: Duration,
) -> Waited<T> {
    match tokio::time::timeout(response_timeout, exec).await {
        Ok(r) => Waited::Response(r),
        Err(_) => Waited::ResponseTimeout,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(idle: Duration) -> (watch::Sender<Progress>, Upload) {
        let (tx, rx) = watch::channel(Progress {
            state: UploadState::Streaming { reading: true },
            since: Instant::now(),
        });
        (tx, Upload { rx, idle })
    }

    fn set(tx: &watch::Sender<Progress>, state: UploadState) {
        tx.send_modify(|p| {
            p.state = state;
            p.since = Instant::now();
        });
    }

    #[tokio::test]
    async fn the_response_timer_starts_when_the_body_is_complete() {
        let (tx, up) = upload(Duration::from_secs(60));
        let exec = tokio::time::sleep(Duration::from_millis(1000));
        let feeder = tokio::spawn(async move {
            // The tunnel keeps delivering for 800 ms, then the body ends.
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                set(&tx, UploadState::Streaming { reading: false });
                set(&tx, UploadState::Streaming { reading: true });
            }
            set(&tx, UploadState::Done);
        });
        // The response comes after 1 s: more than the response timeout
        // from the start, less from the end of the body.
        let waited = up.wait_response(exec, Duration::from_millis(300)).await;
        assert!(matches!(waited, Waited::Response(())), "{waited:?}");
        feeder.await.unwrap();

        let (tx, up) = upload(Duration::from_secs(60));
        set(&tx, UploadState::Done);
        let waited = up
            .wait_response(std::future::pending::<()>(), Duration::from_millis(300))
            .await;
        assert!(matches!(waited, Waited::ResponseTimeout), "{waited:?}");
    }

    #[tokio::test]
    async fn stalls_end_the_wait_and_say_which_side_stopped() {
        // The origin stopped taking the body.
        let (tx, up) = upload(Duration::from_millis(200));
        set(&tx, UploadState::Streaming { reading: false });
        let waited = up
            .wait_response(std::future::pending::<()>(), Duration::from_secs(600))
            .await;
        assert!(matches!(waited, Waited::OriginStalled), "{waited:?}");

        // The tunnel stopped delivering: the body reports it.
        let (tx, up) = upload(Duration::from_millis(200));
        let stall = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            set(&tx, UploadState::Stalled);
        });
        let waited = up
            .wait_response(std::future::pending::<()>(), Duration::from_secs(600))
            .await;
        assert!(
            matches!(waited, Waited::Upload(UploadState::Stalled)),
            "{waited:?}"
        );
        stall.await.unwrap();
    }
}
