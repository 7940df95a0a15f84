//! A real OpenSSH server for a test (Debian's openssh-server): its own host
//! key, an authorized key made by the test, its own config and pid file in
//! the test's folder, on a loopback address of the test's own. Killed by pid
//! when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::proc::{Proc, eventually};
use crate::workdir::Workdir;

/// Where Debian puts sshd.
pub const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd and the client files that reach it.
pub struct Sshd {
    /// The process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The client's private key (its public half is authorized).
    pub client_key: PathBuf,
    /// The host's public key line (`ssh-ed25519 AAAA...`), for known_hosts.
    pub host_key_pub: String,
    /// The user to log in as (the one running the test).
    pub user: String,
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "warren-test", "-f"])
        .arg(path)
        .output()
        .expect("run ssh-keygen (scripts/setup installs openssh-client)");
    assert!(out.status.success(), "ssh-keygen failed: {out:?}");
}

impl Sshd {
    /// Makes the keys and config in `work/ssh` and starts `sshd -D -e` on
    /// `addr`; waits until it listens.
    pub async fn start(work: &Workdir, addr: SocketAddr) -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run scripts/setup (it installs openssh-server)"
        );
        let dir = work.join("ssh");
        std::fs::create_dir_all(&dir).expect("create ssh folder");
        let host_key = dir.join("host_key");
        let client_key = dir.join("client_key");
        keygen(&host_key);
        keygen(&client_key);
        let authorized = dir.join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).expect("authorize the key");
        let host_key_pub = std::fs::read_to_string(host_key.with_extension("pub"))
            .expect("read host key")
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let user = String::from_utf8(
            Command::new("id")
                .arg("-un")
                .output()
                .expect("run id -un")
                .stdout,
        )
        .expect("utf-8 user")
        .trim()
        .to_string();
        // As root, sshd wants its privilege-separation folder; the package
        // makes it only when its service starts, which setup prevents.
        if is_root() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {addr}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
                host_key.display(),
                authorized.display(),
                dir.join("sshd.pid").display(),
            ),
        )
        .expect("write sshd_config");
        let mut cmd = Command::new(SSHD);
        cmd.args(["-D", "-e", "-f"]).arg(&config);
        let proc = Proc::spawn("sshd", cmd, &work.join("sshd.log"));
        eventually("sshd listening", Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
        })
        .await;
        Self {
            proc,
            addr,
            client_key,
            host_key_pub,
            user,
        }
    }

    /// A known_hosts file in `dir` that trusts this host key under `names`
    /// (`ssh.test`, `[127.1.2.3]:2201`).
    pub fn known_hosts(&self, path: &Path, names: &[&str]) {
        let lines: String = names
            .iter()
            .map(|n| format!("{n} {}\n", self.host_key_pub))
            .collect();
        std::fs::write(path, lines).expect("write known_hosts");
    }

    /// `ssh` with no user or system config, this key only, batch mode,
    /// strict host key checking against `known_hosts`.
    pub fn client(&self, known_hosts: &Path) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(&self.client_key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=20"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null", "-l", &self.user]);
        cmd
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}
