//! A real headless Chromium (Debian's `chromium`) with one page, driven over
//! the DevTools protocol by `tests/py/cdp.py`: go to a URL, evaluate
//! JavaScript, wait for a condition, answer `window.prompt`, take a
//! screenshot. The browser and the driver are killed by pid when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::proc::Proc;
use crate::python;

/// Where Debian installs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium and the driver of its page.
pub struct Browser {
    driver: Child,
    to_driver: ChildStdin,
    from_driver: BufReader<ChildStdout>,
    /// Declared after the driver, so it is killed after it.
    _chromium: Proc,
}

impl Browser {
    /// Starts Chromium with its profile and logs in `dir`, and the driver
    /// of its first page.
    pub fn launch(dir: &Path) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: run scripts/setup (it installs Debian's chromium)"
        );
        let profile = dir.join("chromium");
        std::fs::create_dir_all(&profile).expect("create the Chromium profile folder");
        let mut cmd = Command::new(CHROMIUM);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=1280,900",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank");
        let mut chromium = Proc::spawn("chromium", cmd, &dir.join("chromium.log"));
        let port = devtools_port(&mut chromium, &profile);
        let page = page_url(port);
        let mut driver = Command::new(python::python())
            .arg(python::script("cdp.py"))
            .arg(&page)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("cdp.log")).expect("create cdp.log"))
            .spawn()
            .expect("start tests/py/cdp.py");
        Browser {
            to_driver: driver.stdin.take().expect("driver stdin"),
            from_driver: BufReader::new(driver.stdout.take().expect("driver stdout")),
            driver,
            _chromium: chromium,
        }
    }

    /// One command to the driver; its answer, or its error message.
    fn send(&mut self, command: Value) -> Result<Value, String> {
        writeln!(self.to_driver, "{command}").map_err(|e| format!("driver gone: {e}"))?;
        let mut line = String::new();
        self.from_driver
            .read_line(&mut line)
            .map_err(|e| format!("reading the driver: {e}"))?;
        let answer: Value =
            serde_json::from_str(&line).map_err(|e| format!("driver said {line:?}: {e}"))?;
        match answer.get("error") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_string()),
            None => Ok(answer),
        }
    }

    /// Opens `url` and waits for its load event.
    pub fn goto(&mut self, url: &str) {
        if let Err(e) = self.send(json!({"goto": url})) {
            panic!("opening {url}: {e}");
        }
    }

    /// The value of a JavaScript expression (a promise is awaited).
    pub fn eval(&mut self, js: &str) -> Value {
        match self.send(json!({"eval": js})) {
            Ok(answer) => answer["value"].clone(),
            Err(e) => panic!("{e}"),
        }
    }

    /// Waits until the expression `predicate` is truthy; the reason when it
    /// did not become so within `timeout`.
    pub fn wait_for(&mut self, predicate: &str, timeout: Duration) -> Result<(), String> {
        self.send(json!({"wait": predicate, "timeout": timeout.as_secs_f64()}))
            .map(drop)
    }

    /// Answers every later `window.prompt` with `text` (the text goes to the
    /// driver's stdin only, never to an argument list or a log).
    pub fn answer_prompts(&mut self, text: &str) {
        if let Err(e) = self.send(json!({"prompt_answer": text})) {
            panic!("setting the prompt answer: {e}");
        }
    }

    /// Saves a PNG of the page's viewport to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        if let Err(e) = self.send(json!({"screenshot": path})) {
            panic!("screenshot to {}: {e}", path.display());
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The port Chromium chose, from the file it writes into its profile.
fn devtools_port(chromium: &mut Proc, profile: &Path) -> u16 {
    let file: PathBuf = profile.join("DevToolsActivePort");
    let start = Instant::now();
    loop {
        let port = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse().ok());
        if let Some(port) = port {
            return port;
        }
        assert!(chromium.running(), "chromium exited:\n{}", chromium.log());
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "chromium wrote no {} within 60 s:\n{}",
            file.display(),
            chromium.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The DevTools WebSocket URL of the browser's first page (`GET /json/list`).
fn page_url(port: u16) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    write!(
        conn,
        "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .expect("ask DevTools for its targets");
    // DevTools keeps the connection open: read the body by its length.
    let mut answer = BufReader::new(conn);
    let mut length = 0;
    loop {
        let mut line = String::new();
        answer.read_line(&mut line).expect("read DevTools' answer");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("a Content-Length");
        }
    }
    let mut body = vec![0; length];
    answer
        .read_exact(&mut body)
        .expect("read DevTools' targets");
    let body = String::from_utf8_lossy(&body);
    let targets: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("DevTools' /json/list is not JSON ({e}): {body}"));
    targets
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .unwrap_or_else(|| panic!("no page among DevTools' targets: {body}"))
        .to_string()
}
