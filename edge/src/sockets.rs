//! Where a worker's listening sockets come from.
//!
//! Under `edge run` the supervisor owns every listening socket, so they
//! outlive any one worker: a worker asks for each one over the channel the
//! supervisor gave it as standard input, and receives a duplicate of the
//! descriptor (`SCM_RIGHTS`). Two generations then accept from the same
//! TCP listening socket, so an upgrade never refuses a connection: the
//! kernel's queue is the same before, during and after. The tunnel's UDP
//! socket is the exception (two readers of one UDP socket would split a
//! connection's packets at random): each generation gets its own socket in
//! a reuseport group, steered by [`crate::steering`].
//!
//! `edge run --single-process` binds the sockets itself, as before.
//!
//! The channel speaks lines of text, one request and one answer at a time:
//!
//! | worker asks | supervisor answers |
//! |---|---|
//! | `tcp ADDR` | `ok` with the listener's descriptor, or `error WHY` |
//! | `udp ADDR` | `ok GENERATION` with this worker's tunnel socket, or `error WHY` |
//! | `ready` | `serve` once this worker is to take traffic (the upgrade decided) |
//! | `draining` | `ok` (this worker stopped accepting; its successor serves) |

use std::io::{IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The environment variable that makes `edge run` a worker of the
/// supervisor that set it (its value is the worker's generation).
pub const WORKER_ENV: &str = "WARREN_EDGE_WORKER";

/// Longest line on the channel.
const MAX_LINE: usize = 4096;

/// Where the worker's sockets come from.
#[derive(Clone, Debug)]
pub enum SocketSource {
    /// Bound by this process (`--single-process`).
    Direct,
    /// Handed over by the supervisor.
    Supervised(Arc<Broker>),
}

/// A tunnel socket and, under a supervisor, the generation to put in the
/// connection IDs.
#[derive(Debug)]
pub struct TunnelSocket {
    /// The bound UDP socket.
    pub socket: std::net::UdpSocket,
    /// This worker's generation, when supervised.
    pub generation: Option<u8>,
}

impl SocketSource {
    /// A listening TCP socket on `addr`.
    pub fn tcp(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let listener = match self {
            Self::Direct => std::net::TcpListener::bind(addr)?,
            Self::Supervised(b) => {
                let (_, fd) = b.ask(&format!("tcp {addr}"))?;
                std::net::TcpListener::from(fd.ok_or_else(|| no_descriptor("tcp"))?)
            }
        };
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    }

    /// The tunnel's UDP socket on `addr`.
    pub fn udp(&self, addr: SocketAddr) -> std::io::Result<TunnelSocket> {
        match self {
            Self::Direct => Ok(TunnelSocket {
                socket: std::net::UdpSocket::bind(addr)?,
                generation: None,
            }),
            Self::Supervised(b) => {
                let (answer, fd) = b.ask(&format!("udp {addr}"))?;
                let generation = answer.trim().parse::<u8>().map_err(|_| {
                    protocol_error(&format!(
                        "the supervisor's generation {answer:?} is not a number"
                    ))
                })?;
                Ok(TunnelSocket {
                    socket: std::net::UdpSocket::from(fd.ok_or_else(|| no_descriptor("udp"))?),
                    generation: Some(generation),
                })
            }
        }
    }

    /// This worker closed its listener on `addr` (a TCP port left the
    /// tunnels file): the supervisor closes it once no worker holds it.
    pub fn release(&self, addr: SocketAddr) {
        if let Self::Supervised(b) = self
            && let Err(e) = b.ask_plain(&format!("release {addr}"))
        {
            tracing::warn!(%addr, error = %e, "cannot tell the supervisor a TCP port closed");
        }
    }

    /// Says this worker is ready and waits until it is to serve (at once
    /// when not supervised).
    pub async fn ready(&self, version: &str) -> std::io::Result<()> {
        match self {
            Self::Direct => Ok(()),
            Self::Supervised(b) => {
                let b = b.clone();
                let request = format!("ready {version}");
                let answer = tokio::task::spawn_blocking(move || b.ask_plain(&request))
                    .await
                    .map_err(std::io::Error::other)??;
                if answer == "serve" {
                    Ok(())
                } else {
                    Err(protocol_error(&format!(
                        "the supervisor answered {answer:?} to ready"
                    )))
                }
            }
        }
    }

    /// Tells the supervisor this worker stopped accepting.
    pub async fn draining(&self) {
        if let Self::Supervised(b) = self {
            let b = b.clone();
            let told = tokio::task::spawn_blocking(move || b.ask_plain("draining")).await;
            if !matches!(told, Ok(Ok(_))) {
                tracing::debug!("could not tell the supervisor this worker drains");
            }
        }
    }

    /// Whether a supervisor hands the sockets over (so it can start a
    /// successor).
    pub fn supervised(&self) -> bool {
        matches!(self, Self::Supervised(_))
    }
}

/// The worker's end of the channel to its supervisor.
#[derive(Debug)]
pub struct Broker {
    channel: Mutex<UnixStream>,
}

impl Broker {
    /// The channel the supervisor gave this process as standard input.
    pub fn from_stdin() -> std::io::Result<Self> {
        let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
        let channel = UnixStream::from(fd);
        // A standard input that is not a socket (a terminal, a file): this
        // process was not started by `edge run`.
        channel.peer_addr().map_err(|_| {
            std::io::Error::other(format!(
                "{WORKER_ENV} is set but standard input is not the supervisor's channel: \
                 start the edge with `edge run`, which starts its workers itself"
            ))
        })?;
        Ok(Self {
            channel: Mutex::new(channel),
        })
    }

    fn ask_plain(&self, request: &str) -> std::io::Result<String> {
        self.ask(request).map(|(answer, _)| answer)
    }

    /// Sends one request and reads its answer (the text after `ok`, or
    /// `serve`) and the descriptor that came with it.
    fn ask(&self, request: &str) -> std::io::Result<(String, Option<OwnedFd>)> {
        let mut channel = self.channel.lock().unwrap_or_else(|e| e.into_inner());
        send_line(&*channel, &format!("{request}\n"), None)?;
        let (line, fd) = recv_line(&mut channel)?;
        if line == "serve" {
            return Ok((line, fd));
        }
        match line.split_once(' ').unwrap_or((&line, "")) {
            ("ok", rest) => Ok((rest.to_string(), fd)),
            ("error", why) => Err(std::io::Error::other(why.to_string())),
            _ => Err(protocol_error(&format!("unexpected answer {line:?}"))),
        }
    }
}

/// Sends `line` (ending in a newline) with at most one descriptor.
pub fn send_line(
    channel: impl AsFd,
    line: &str,
    fd: Option<std::os::fd::BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let fds: Vec<_> = fd.into_iter().collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(protocol_error("no room for the descriptor"));
    }
    let bytes = line.as_bytes();
    let sent = rustix::net::sendmsg(
        &channel,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != bytes.len() {
        // Lines are far below a socket buffer; a short send means the peer
        // is gone or the channel is broken.
        return Err(protocol_error("short write on the supervisor channel"));
    }
    Ok(())
}

/// Reads one line (without its newline) and the descriptor sent with it.
/// Blocking; lines are short and sent in one piece, but a line split
/// across reads is put back together.
pub fn recv_line(channel: &mut UnixStream) -> std::io::Result<(String, Option<OwnedFd>)> {
    let mut line = Vec::new();
    let mut received: Option<OwnedFd> = None;
    loop {
        let mut byte = [0u8; 1];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        // One byte at a time: a read never takes bytes (or a descriptor)
        // that belong to the next answer.
        let msg = rustix::net::recvmsg(
            &*channel,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = m {
                for fd in fds {
                    received.get_or_insert(fd);
                }
            }
        }
        if msg.bytes == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the supervisor closed the channel",
            ));
        }
        if byte[0] == b'\n' {
            let text =
                String::from_utf8(line).map_err(|_| protocol_error("a line is not UTF-8"))?;
            return Ok((text, received));
        }
        if line.len() >= MAX_LINE {
            return Err(protocol_error("a line is too long"));
        }
        line.push(byte[0]);
    }
}

/// Reads one request line from a worker (the supervisor's side; workers
/// send no descriptors, so a plain read does).
pub fn read_request(channel: &mut impl Read) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if channel.read(&mut byte)? == 0 {
            return Ok(None);
        }
        if byte[0] == b'\n' {
            return String::from_utf8(line)
                .map(Some)
                .map_err(|_| protocol_error("a line is not UTF-8"));
        }
        if line.len() >= MAX_LINE {
            return Err(protocol_error("a line is too long"));
        }
        line.push(byte[0]);
    }
}

fn no_descriptor(what: &str) -> std::io::Error {
    protocol_error(&format!(
        "the supervisor's {what} answer came without a socket"
    ))
}

fn protocol_error(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("supervisor channel: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_and_its_descriptor_cross_the_channel() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        send_line(&a, "ok\n", Some(listener.as_fd())).unwrap();
        send_line(&a, "error no\n", None).unwrap();
        let (line, fd) = recv_line(&mut b).unwrap();
        assert_eq!(line, "ok");
        let got = std::net::TcpListener::from(fd.unwrap());
        assert_eq!(got.local_addr().unwrap(), addr);
        let (line, fd) = recv_line(&mut b).unwrap();
        assert_eq!(line, "error no");
        assert!(fd.is_none());
        drop(a);
        assert!(recv_line(&mut b).is_err());
    }

    #[test]
    fn requests_are_lines_and_end_at_eof() {
        let mut input: &[u8] = b"tcp 127.0.0.1:80\nready\n";
        assert_eq!(
            read_request(&mut input).unwrap().unwrap(),
            "tcp 127.0.0.1:80"
        );
        assert_eq!(read_request(&mut input).unwrap().unwrap(), "ready");
        assert!(read_request(&mut input).unwrap().is_none());
        let long = vec![b'x'; MAX_LINE + 10];
        assert!(read_request(&mut long.as_slice()).is_err());
    }
}
