//! A throw-away PostgreSQL server for a test: its own data folder, a free
//! port on 127.0.0.1, trust authentication, stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running PostgreSQL.
pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    /// `postgres://postgres@127.0.0.1:PORT/warren`.
    pub url: String,
}

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("PostgreSQL server binaries (scripts/setup installs them)")
}

fn as_postgres(bin: &Path, tool: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(tool))
        .args(args)
        .output()
        .expect("runuser");
    assert!(out.status.success(), "{tool} {args:?} failed: {out:?}");
}

impl Postgres {
    /// initdb, start, create database `warren`.
    pub fn start() -> Self {
        let bin = pg_bin();
        let dir = PathBuf::from(format!("/tmp/warren-pg-{:08x}", crate::net::random_u32()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success());
        let data = dir.join("data");
        let d = dir.display().to_string();
        as_postgres(
            &bin,
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = format!("-p {port} -k {d} -c listen_addresses=127.0.0.1");
        let log = format!("{d}/postgres.log");
        as_postgres(
            &bin,
            "pg_ctl",
            &[
                "-D",
                &data.display().to_string(),
                "-o",
                &opts,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
        let pg = Self {
            dir,
            bin,
            url: format!("postgres://postgres@127.0.0.1:{port}/warren"),
        };
        as_postgres(
            &pg.bin,
            "createdb",
            &["-h", "127.0.0.1", "-p", &port.to_string(), "warren"],
        );
        pg
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
