//! `edge run`: the supervisor, a small parent that owns the listening
//! sockets and runs the edge in a worker process it can replace.
//!
//! The supervisor's PID never changes, so systemd and supervisord keep
//! tracking the service across upgrades. An upgrade (`edge upgrade`, or
//! SIGHUP) starts a new worker from the binary the service's path names
//! now (Salt has switched `current/` to the new release), waits until it
//! is ready, lets it serve, then tells the old worker to drain (SIGUSR2).
//! Both accept from the same listening sockets meanwhile, so no connection
//! is refused; a new worker that exits or never gets ready is stopped and
//! the old one goes on serving as if nothing happened.
//!
//! The sockets cross to the workers as described in [`crate::sockets`];
//! the tunnel sockets are steered per generation by [`crate::steering`].
//! SIGTERM or SIGINT stops every worker (each drains) and then the
//! supervisor. A serving worker that dies is not restarted here: the
//! supervisor stops too, and the service manager restarts the edge.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::sockets::{WORKER_ENV, read_request, send_line};
use crate::steering::{self, Group};

/// How long `edge upgrade` waits for the old worker to say it stopped
/// accepting, so that whatever connects after the answer reaches the new one.
const STOP_ACCEPTING_WAIT: Duration = Duration::from_secs(5);
/// How long a control client has to send its command.
const CONTROL_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `edge upgrade` waits for a supervisor that is starting.
const SUPERVISOR_START_WAIT: Duration = Duration::from_secs(5);
/// Listen backlog of the public and admin sockets (tokio's default).
const BACKLOG: i32 = 1024;

/// What the supervisor needs: how to start a worker, and its settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The program path as the service runs it (argv[0]): resolved again at
    /// each upgrade, so a switched `current/` link starts the new release.
    pub program: OsString,
    /// The rest of the command line, given to every worker.
    pub args: Vec<OsString>,
    /// The admin address, which names the control socket.
    pub admin: SocketAddr,
    /// How long a new worker has to become ready.
    pub upgrade_timeout: Duration,
}

/// The abstract Unix socket `edge upgrade` talks to: one per edge on a
/// host, named after its admin address (which only one edge can bind).
pub fn control_name(admin: SocketAddr) -> String {
    format!("warren-edge@{admin}")
}

/// Runs the supervisor until its workers are gone.
pub fn run(opts: Options) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edge: cannot start the supervisor's runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(supervise(opts))
}

/// A worker process and the upgrade waiting on it.
struct Worker {
    pid: u32,
    /// Its `ready` hands the waiting upgrade the version it runs and the
    /// switch that lets it serve.
    ready: Option<oneshot::Sender<(String, oneshot::Sender<()>)>>,
    /// Its `draining`.
    stopped_accepting: Option<oneshot::Sender<()>>,
    /// Its exit, for an upgrade still waiting for it to be ready.
    exited: Option<oneshot::Sender<ExitStatus>>,
}

/// A listening TCP socket and the generations that hold it.
struct TcpEntry {
    listener: socket2::Socket,
    holders: BTreeSet<u8>,
}

/// A tunnel address: one UDP socket per generation, in one reuseport group.
#[derive(Default)]
struct UdpEntry {
    group: Group,
    sockets: HashMap<u8, std::net::UdpSocket>,
}

#[derive(Default)]
struct State {
    tcp: HashMap<SocketAddr, TcpEntry>,
    udp: HashMap<SocketAddr, UdpEntry>,
    workers: HashMap<u8, Worker>,
    serving: Option<u8>,
    next_generation: u8,
    stopping: bool,
}

struct Shared {
    opts: Options,
    state: Mutex<State>,
    /// One upgrade at a time.
    upgrading: tokio::sync::Mutex<()>,
    events: mpsc::UnboundedSender<Exited>,
}

/// A worker process ended.
struct Exited {
    generation: u8,
    pid: u32,
    status: std::io::Result<ExitStatus>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn supervise(opts: Options) -> ExitCode {
    let control = match bind_control(opts.admin) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("edge: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut hup, mut term, mut int) = match (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(h), Ok(t), Ok(i)) => (h, t, i),
        _ => {
            eprintln!("edge: cannot install the supervisor's signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            next_generation: first_generation(),
            ..State::default()
        }),
        opts,
        upgrading: tokio::sync::Mutex::new(()),
        events: events_tx,
    });

    // The first worker: the same path as an upgrade with nothing to replace.
    let first = tokio::spawn(upgrade(shared.clone(), None));
    let mut first = Some(first);
    let mut code = ExitCode::SUCCESS;
    loop {
        tokio::select! {
            done = async { first.as_mut().expect("guarded").await }, if first.is_some() => {
                first = None;
                match done {
                    Ok(Ok(summary)) => tracing::info!(%summary, "edge serving"),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e.message, "the edge's first worker did not start");
                        code = e.code;
                        stop_all(&shared);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the first start failed");
                        code = ExitCode::FAILURE;
                        stop_all(&shared);
                    }
                }
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: upgrading in place");
                let shared = shared.clone();
                tokio::spawn(async move {
                    match upgrade(shared, None).await {
                        Ok(summary) => tracing::info!(%summary, "upgrade done"),
                        Err(e) => tracing::error!(error = %e.message, "upgrade failed"),
                    }
                });
            }
            conn = control.accept() => match conn {
                Ok((stream, _)) => { tokio::spawn(control_client(shared.clone(), stream)); }
                Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
            },
            _ = term.recv() => { tracing::info!(signal = "SIGTERM", "stopping every worker"); stop_all(&shared); }
            _ = int.recv() => { tracing::info!(signal = "SIGINT", "stopping every worker"); stop_all(&shared); }
            Some(exited) = events.recv() => {
                if let Some(failed) = worker_exited(&shared, exited) {
                    code = failed;
                }
            }
        }
        let state = shared.state();
        if state.stopping && state.workers.is_empty() && first.is_none() {
            break;
        }
    }
    tracing::info!("edge stopped");
    code
}

/// Why an upgrade failed, and the exit code a failed first start gives.
#[derive(Debug)]
struct UpgradeError {
    message: String,
    code: ExitCode,
}

fn upgrade_error(message: String) -> UpgradeError {
    UpgradeError {
        message,
        code: ExitCode::FAILURE,
    }
}

/// Starts a worker, waits until it is ready, lets it serve and tells the
/// one it replaces to drain. `progress` hears each step.
async fn upgrade(
    shared: Arc<Shared>,
    progress: Option<mpsc::UnboundedSender<String>>,
) -> Result<String, UpgradeError> {
    let say = |line: String| {
        tracing::info!("{line}");
        if let Some(p) = &progress {
            let _ = p.send(line);
        }
    };
    let _one_at_a_time = shared.upgrading.lock().await;
    let (generation, pid, ready, exited, old) = {
        let mut state = shared.state();
        if state.stopping {
            return Err(upgrade_error("the edge is stopping".into()));
        }
        if state.workers.len() >= steering::MAX_GENERATIONS {
            return Err(upgrade_error(format!(
                "{} workers are still draining; wait for them to finish (or lower \
                 upgrade_grace_period) before upgrading again",
                state.workers.len() - 1
            )));
        }
        let generation = state.new_generation();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (exited_tx, exited_rx) = oneshot::channel();
        let pid = spawn_worker(&shared, generation)
            .map_err(|e| upgrade_error(format!("cannot start a worker: {e}")))?;
        state.workers.insert(
            generation,
            Worker {
                pid,
                ready: Some(ready_tx),
                stopped_accepting: None,
                exited: Some(exited_tx),
            },
        );
        (generation, pid, ready_rx, exited_rx, state.serving)
    };
    say(format!(
        "started worker generation {generation} (pid {pid}) from {}",
        shared.opts.program.to_string_lossy()
    ));
    let keeps = match old {
        Some(g) => format!("generation {g} keeps serving"),
        None => "nothing was serving".into(),
    };
    let timeout = shared.opts.upgrade_timeout;
    let exited_error = |status: Option<ExitStatus>| UpgradeError {
        message: format!(
            "worker generation {generation} (pid {pid}) exited {}before it was ready (its log \
             above says why); {keeps}",
            status.map_or(String::new(), |s| format!("with {s} "))
        ),
        code: status
            .and_then(|s| s.code())
            .and_then(|c| u8::try_from(c).ok())
            .map_or(ExitCode::FAILURE, ExitCode::from),
    };
    let mut exited = exited;
    let (version, serve) = tokio::select! {
        biased;
        status = &mut exited => return Err(exited_error(status.ok())),
        r = ready => match r {
            Ok(r) => r,
            // Gone: its exit status is on its way.
            Err(_) => return Err(exited_error(exited.await.ok())),
        },
        _ = tokio::time::sleep(timeout) => {
            signal_worker(pid, rustix::process::Signal::KILL);
            return Err(upgrade_error(format!(
                "worker generation {generation} (pid {pid}) was not ready within {timeout:?} \
                 (upgrade_timeout); stopped it; {keeps}"
            )));
        }
    };
    let stopped_accepting = {
        let mut state = shared.state();
        state.handover(generation);
        let _ = serve.send(());
        old.and_then(|g| {
            let (tx, rx) = oneshot::channel();
            let w = state.workers.get_mut(&g)?;
            w.stopped_accepting = Some(tx);
            signal_worker(w.pid, rustix::process::Signal::USR2);
            Some((g, w.pid, rx))
        })
    };
    let mut summary = format!("generation {generation} (pid {pid}, version {version}) serves");
    if let Some((g, old_pid, rx)) = stopped_accepting {
        // The old worker stops accepting within milliseconds; waiting for
        // it means whatever connects after this answer meets the new one.
        let _ = tokio::time::timeout(STOP_ACCEPTING_WAIT, rx).await;
        summary.push_str(&format!(
            "; generation {g} (pid {old_pid}) drains its open requests and connections"
        ));
    }
    Ok(summary)
}

/// Starts `edge run` again as worker `generation`, with one end of its
/// channel as standard input.
fn spawn_worker(shared: &Arc<Shared>, generation: u8) -> std::io::Result<u32> {
    let (ours, theirs) = UnixStream::pair()?;
    let mut child = tokio::process::Command::new(&shared.opts.program)
        .args(&shared.opts.args)
        .env(WORKER_ENV, generation.to_string())
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let channel_shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("worker-{generation}"))
        .spawn(move || serve_channel(&channel_shared, generation, ours))?;
    let events = shared.events.clone();
    tokio::spawn(async move {
        let status = child.wait().await;
        let _ = events.send(Exited {
            generation,
            pid,
            status,
        });
    });
    Ok(pid)
}

/// Answers one worker's requests until it closes the channel (it exited).
fn serve_channel(shared: &Shared, generation: u8, mut channel: UnixStream) {
    loop {
        let line = match read_request(&mut channel) {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(generation, error = %e, "bad request from a worker; closing its channel");
                return;
            }
        };
        let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let sent = match verb {
            "tcp" | "udp" => match arg.parse::<SocketAddr>() {
                Ok(addr) => {
                    let mut state = shared.state();
                    let answer = if verb == "tcp" {
                        state
                            .tcp(generation, addr)
                            .map(|fd| ("ok\n".to_string(), fd))
                    } else {
                        state
                            .udp(generation, addr)
                            .map(|fd| (format!("ok {generation}\n"), fd))
                    };
                    match answer {
                        Ok((text, fd)) => send_line(&channel, &text, Some(fd)),
                        Err(e) => send_line(&channel, &format!("error {e}\n"), None),
                    }
                }
                Err(_) => send_line(
                    &channel,
                    &format!("error {arg:?} is not an address\n"),
                    None,
                ),
            },
            "release" => {
                if let Ok(addr) = arg.parse::<SocketAddr>() {
                    shared.state().release_tcp(generation, addr);
                }
                send_line(&channel, "ok\n", None)
            }
            "ready" => {
                let (serve_tx, serve_rx) = oneshot::channel();
                let waiting = shared
                    .state()
                    .workers
                    .get_mut(&generation)
                    .and_then(|w| w.ready.take());
                if let Some(w) = waiting {
                    let _ = w.send((arg.to_string(), serve_tx));
                }
                match serve_rx.blocking_recv() {
                    Ok(()) => send_line(&channel, "serve\n", None),
                    Err(_) => send_line(
                        &channel,
                        "error the upgrade that started this worker was called off\n",
                        None,
                    ),
                }
            }
            "draining" => {
                let waiting = shared
                    .state()
                    .workers
                    .get_mut(&generation)
                    .and_then(|w| w.stopped_accepting.take());
                if let Some(w) = waiting {
                    let _ = w.send(());
                }
                send_line(&channel, "ok\n", None)
            }
            _ => send_line(&channel, &format!("error unknown request {verb:?}\n"), None),
        };
        if sent.is_err() {
            return;
        }
    }
}

impl State {
    /// The next generation byte not in use.
    fn new_generation(&mut self) -> u8 {
        loop {
            let g = self.next_generation;
            self.next_generation = g.wrapping_add(1);
            if !self.workers.contains_key(&g) {
                return g;
            }
        }
    }

    /// The listener on `addr`, bound the first time a worker asks.
    fn tcp(
        &mut self,
        generation: u8,
        addr: SocketAddr,
    ) -> std::io::Result<std::os::fd::BorrowedFd<'_>> {
        let entry = match self.tcp.entry(addr) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(TcpEntry {
                listener: bind_tcp(addr)?,
                holders: BTreeSet::new(),
            }),
        };
        entry.holders.insert(generation);
        Ok(entry.listener.as_fd())
    }

    /// A worker closed its listener on `addr` (a TCP port left the tunnels
    /// file): the socket closes when no worker holds it, so the kernel stops
    /// taking connections nobody would accept.
    fn release_tcp(&mut self, generation: u8, addr: SocketAddr) {
        if let Some(entry) = self.tcp.get_mut(&addr) {
            entry.holders.remove(&generation);
            if entry.holders.is_empty() {
                self.tcp.remove(&addr);
            }
        }
    }

    /// A new UDP socket for `generation` in the group of `addr`.
    fn udp(
        &mut self,
        generation: u8,
        addr: SocketAddr,
    ) -> std::io::Result<std::os::fd::BorrowedFd<'_>> {
        let serving = self.serving;
        let entry = self.udp.entry(addr).or_default();
        if entry.sockets.contains_key(&generation) {
            return Err(std::io::Error::other(
                "this worker has its tunnel socket already",
            ));
        }
        let socket = bind_udp(addr)?;
        entry.group.join(generation);
        entry.sockets.insert(generation, socket);
        steer(entry, serving.unwrap_or(generation));
        Ok(entry.sockets[&generation].as_fd())
    }

    /// `generation` serves: new connections go to it from now on.
    fn handover(&mut self, generation: u8) {
        self.serving = Some(generation);
        for entry in self.udp.values_mut() {
            steer(entry, generation);
        }
    }

    /// A worker is gone: its sockets leave the groups, and listeners nobody
    /// holds close.
    fn forget(&mut self, generation: u8) {
        self.workers.remove(&generation);
        self.tcp.retain(|_, e| {
            e.holders.remove(&generation);
            !e.holders.is_empty()
        });
        let serving = self.serving;
        for entry in self.udp.values_mut() {
            if entry.sockets.remove(&generation).is_some() {
                entry.group.leave(generation);
                if let Some(s) = serving {
                    steer(entry, s);
                }
            }
        }
        self.udp.retain(|_, e| !e.sockets.is_empty());
    }
}

/// Attaches the steering program for `newest` to the group (any socket of
/// the group sets it for all).
fn steer(entry: &UdpEntry, newest: u8) {
    let Some(program) = entry.group.program(newest) else {
        return;
    };
    let Some(socket) = entry.sockets.get(&newest) else {
        return;
    };
    if let Err(e) = attach_program(socket, &program) {
        // Without it the kernel hashes packets over the sockets: tunnel
        // connections of the other generations would be cut.
        tracing::error!(error = %e, "cannot attach the tunnel sockets' steering program");
    }
}

fn attach_program(socket: &std::net::UdpSocket, program: &[steering::Insn]) -> std::io::Result<()> {
    use nix::libc::{sock_filter, sock_fprog};
    let mut filters: Vec<sock_filter> = program
        .iter()
        .map(|i| sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = sock_fprog {
        len: u16::try_from(filters.len()).map_err(std::io::Error::other)?,
        filter: filters.as_mut_ptr(),
    };
    nix::sys::socket::setsockopt(
        socket,
        nix::sys::socket::sockopt::AttachReusePortCbpf,
        &fprog,
    )
    .map_err(std::io::Error::from)
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot bind TCP {addr}: {e}")))?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Only sockets of this user can join the group (a kernel rule).
    socket.set_reuse_port(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot bind UDP {addr}: {e}")))?;
    Ok(socket.into())
}

/// Handles a worker's end: frees its sockets, and when it was the serving
/// one (a crash), stops the edge so the service manager restarts it.
fn worker_exited(shared: &Shared, exited: Exited) -> Option<ExitCode> {
    let Exited {
        generation,
        pid,
        status,
    } = exited;
    let mut state = shared.state();
    let waiting = state
        .workers
        .get_mut(&generation)
        .and_then(|w| w.exited.take());
    let serving = state.serving == Some(generation);
    // The status first: an upgrade waiting for this worker says why it went.
    if let (Some(w), Ok(s)) = (waiting, &status) {
        let _ = w.send(*s);
    }
    state.forget(generation);
    let status_text = match &status {
        Ok(s) => s.to_string(),
        Err(e) => format!("unknown status ({e})"),
    };
    if serving && !state.stopping {
        tracing::error!(generation, pid, status = %status_text,
            "the serving worker exited unexpectedly; stopping the edge so the service manager restarts it");
        state.stopping = true;
        for w in state.workers.values() {
            signal_worker(w.pid, rustix::process::Signal::TERM);
        }
        state.tcp.clear();
        return Some(ExitCode::FAILURE);
    }
    tracing::info!(generation, pid, status = %status_text, "worker exited");
    None
}

fn stop_all(shared: &Shared) {
    let mut state = shared.state();
    state.stopping = true;
    for w in state.workers.values() {
        signal_worker(w.pid, rustix::process::Signal::TERM);
    }
    // The edge stops, nobody takes its place: once the workers drop their
    // copies (at once, as they drain) the ports refuse, and clients go to
    // another edge instead of queueing for a process that will not accept.
    state.tcp.clear();
}

fn signal_worker(pid: u32, signal: rustix::process::Signal) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    if let Err(e) = rustix::process::kill_process(pid, signal) {
        tracing::debug!(pid = pid.as_raw_nonzero().get(), error = %e, "cannot signal a worker");
    }
}

/// A starting generation that differs between supervisor runs, so a
/// connection ID of a previous run is unlikely to name a live worker.
fn first_generation() -> u8 {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 1];
    let _ = SystemRandom::new().fill(&mut b);
    b[0]
}

fn bind_control(admin: SocketAddr) -> Result<tokio::net::UnixListener, String> {
    use std::os::linux::net::SocketAddrExt;
    let name = control_name(admin);
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| format!("cannot name the control socket {name}: {e}"))?;
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "another edge with admin address {admin} runs on this host (its control socket \
                 @{name} is taken): stop it, or give this one another admin address"
            )
        } else {
            format!("cannot bind the control socket @{name}: {e}")
        }
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("control socket: {e}"))?;
    tokio::net::UnixListener::from_std(listener).map_err(|e| format!("control socket: {e}"))
}

/// One `edge upgrade` (or `edge workers`) client on the control socket.
async fn control_client(shared: Arc<Shared>, stream: tokio::net::UnixStream) {
    let allowed = stream.peer_cred().is_ok_and(|c| {
        let uid = c.uid();
        uid == 0 || uid == rustix::process::getuid().as_raw()
    });
    let (read, mut write) = stream.into_split();
    if !allowed {
        let _ = write
            .write_all(b"error only root or the edge's own user may control it\n")
            .await;
        return;
    }
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(256);
    let read = tokio::time::timeout(CONTROL_READ_TIMEOUT, reader.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return;
    }
    match line.trim() {
        "upgrade" => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let mut job = tokio::spawn(upgrade(shared, Some(tx)));
            let result = loop {
                tokio::select! {
                    Some(step) = rx.recv() => {
                        let _ = write.write_all(format!("progress {step}\n").as_bytes()).await;
                    }
                    done = &mut job => break done,
                }
            };
            while let Ok(step) = rx.try_recv() {
                let _ = write
                    .write_all(format!("progress {step}\n").as_bytes())
                    .await;
            }
            let answer = match result {
                Ok(Ok(summary)) => format!("ok {summary}\n"),
                Ok(Err(e)) => format!("error {}\n", e.message),
                Err(e) => format!("error the upgrade failed: {e}\n"),
            };
            let _ = write.write_all(answer.as_bytes()).await;
        }
        "workers" => {
            let text = {
                let state = shared.state();
                let mut gens: Vec<_> = state.workers.iter().collect();
                gens.sort_by_key(|(_, w)| w.pid);
                let mut text = String::new();
                for (g, w) in gens {
                    let role = if state.serving == Some(*g) {
                        "serving"
                    } else if w.ready.is_some() {
                        "starting"
                    } else {
                        "draining"
                    };
                    text.push_str(&format!("worker generation={g} pid={} {role}\n", w.pid));
                }
                text
            };
            let _ = write.write_all(format!("{text}ok\n").as_bytes()).await;
        }
        other => {
            let _ = write
                .write_all(
                    format!("error unknown command {other:?}: upgrade or workers\n").as_bytes(),
                )
                .await;
        }
    }
}

/// `edge upgrade`: asks the supervisor of the edge with admin address
/// `admin` for an upgrade, printing its steps to stderr. Returns its
/// summary, or why it failed.
pub fn request_upgrade(admin: SocketAddr, timeout: Duration) -> Result<String, String> {
    control_request(admin, "upgrade", timeout, |step| {
        eprintln!("edge upgrade: {step}")
    })
}

/// `edge workers`: the supervisor's workers, a line each.
pub fn list_workers(admin: SocketAddr) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    control_request(admin, "workers", CONTROL_READ_TIMEOUT, |l| {
        lines.push(l.to_string())
    })?;
    Ok(lines)
}

fn control_request(
    admin: SocketAddr,
    command: &str,
    timeout: Duration,
    mut on_progress: impl FnMut(&str),
) -> Result<String, String> {
    use std::io::{BufRead, Write};
    use std::os::linux::net::SocketAddrExt;
    let name = control_name(admin);
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| e.to_string())?;
    // A supervisor that was started a moment ago (Salt starts the service,
    // then asks for the upgrade) may not listen yet: wait a little for it.
    let waiting_since = std::time::Instant::now();
    let mut stream = loop {
        match UnixStream::connect_addr(&addr) {
            Ok(s) => break s,
            Err(e) if waiting_since.elapsed() < SUPERVISOR_START_WAIT => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                return Err(format!(
                    "no edge supervisor with admin address {admin} runs on this host ({e}): is \
                     the edge running, under `edge run` with this config? (one started with \
                     --single-process cannot upgrade in place: restart it)"
                ));
            }
        }
    };
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| format!("cannot talk to the edge supervisor: {e}"))?;
    let mut reader = std::io::BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("no answer from the edge supervisor within {timeout:?}: {e}"))?;
        if n == 0 {
            return Err("the edge supervisor closed the connection without an answer".into());
        }
        let text = line.trim_end();
        if let Some(step) = text.strip_prefix("progress ") {
            on_progress(step);
        } else if let Some(ok) = text.strip_prefix("ok") {
            return Ok(ok.trim().to_string());
        } else if let Some(e) = text.strip_prefix("error ") {
            return Err(e.to_string());
        } else {
            on_progress(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_udp_addr() -> SocketAddr {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// Which generation's socket a datagram reaches, through the kernel.
    fn lands_on(state: &State, addr: SocketAddr, packet: &[u8]) -> u8 {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(packet, addr).unwrap();
        let entry = &state.udp[&addr];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            for (g, s) in &entry.sockets {
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 64];
                if let Ok((n, _)) = s.recv_from(&mut buf) {
                    assert_eq!(&buf[..n], packet);
                    return *g;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the datagram reached no socket"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_kernel_steers_tunnel_datagrams_by_generation() {
        let addr = free_udp_addr();
        let mut state = State::default();
        state.udp(10, addr).unwrap();
        state.handover(10);
        state.udp(11, addr).unwrap();
        let short = |g: u8| vec![0x40, g, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut initial = vec![0xc0, 0, 0, 0, 1, 20, 11];
        initial.extend([7; 19]);
        // Generation 11 is starting: new connections still go to 10.
        assert_eq!(lands_on(&state, addr, &initial), 10);
        assert_eq!(lands_on(&state, addr, &short(11)), 11);
        state.handover(11);
        for _ in 0..20 {
            assert_eq!(lands_on(&state, addr, &short(10)), 10);
            assert_eq!(lands_on(&state, addr, &short(11)), 11);
            assert_eq!(lands_on(&state, addr, &initial), 11);
        }
        // Generation 10 ends: everything reaches 11.
        state.forget(10);
        assert_eq!(lands_on(&state, addr, &short(10)), 11);
        assert_eq!(state.udp[&addr].group.len(), 1);
    }

    #[test]
    fn a_listener_lives_while_any_generation_holds_it() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut state = State::default();
        state.tcp(1, addr).unwrap();
        state.tcp(2, addr).unwrap();
        state.forget(1);
        assert!(std::net::TcpStream::connect(addr).is_ok());
        state.release_tcp(2, addr);
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
