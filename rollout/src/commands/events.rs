//! The terminal's views of the engine's progress events: a live display on
//! a terminal, plain lines for people and logs (wall-clock time in UTC,
//! then the event's text) or one JSON object per line for programs. The
//! engine knows none of them.

use std::io::{IsTerminal, Write};
use std::time::SystemTime;

use rollout::cli::Output;
use rollout::display;
use rollout::progress::Progress;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

/// Where a command sends progress events, as `--output` asks. `close` it
/// before printing anything else, so the display's last frame is drawn.
pub struct View {
    to: To,
}

enum To {
    Plain,
    Json,
    /// The display's task, drawing what the channel brings.
    Live {
        events: UnboundedSender<display::Stamped>,
        drawing: JoinHandle<()>,
    },
}

impl View {
    /// The view `output` names; `auto` is the live display on a terminal.
    pub fn open(output: Output) -> View {
        let to = match output {
            Output::Json => To::Json,
            Output::Plain => To::Plain,
            Output::Tty => live(),
            Output::Auto if on_terminal() => live(),
            Output::Auto => To::Plain,
        };
        View { to }
    }

    /// Shows one event.
    pub fn say(&self, event: &Progress) {
        let at = SystemTime::now();
        match &self.to {
            To::Plain => emit(&display::line(at, event)),
            To::Json => emit(&json(at, event)),
            // The display may have stopped on a closed stdout; the
            // rollout goes on.
            To::Live { events, .. } => {
                let _ = events.send((at, event.clone()));
            }
        }
    }

    /// Waits until the display has drawn every event said.
    pub async fn close(self) {
        if let To::Live { events, drawing } = self.to {
            drop(events);
            let _ = drawing.await;
        }
    }
}

/// Whether `auto` means the live display: stdout is a terminal that can
/// move its cursor.
fn on_terminal() -> bool {
    std::io::stdout().is_terminal() && std::env::var("TERM").is_ok_and(|t| t != "dumb")
}

fn live() -> To {
    let (events, rx) = unbounded_channel();
    let drawing = tokio::spawn(async move {
        let mut out = std::io::stdout();
        let _ = display::run(rx, &mut out, display::width()).await;
    });
    To::Live { events, drawing }
}

/// `{"at": "2026-12-02T15:08:16.123Z", "event": "batch_started", ...}`.
fn json(at: SystemTime, event: &Progress) -> String {
    let mut line = serde_json::Map::new();
    line.insert(
        "at".into(),
        humantime::format_rfc3339_millis(at).to_string().into(),
    );
    match serde_json::to_value(event) {
        Ok(serde_json::Value::Object(fields)) => line.extend(fields),
        // Every variant is a struct or a unit variant, tagged: an object.
        other => {
            line.insert("event".into(), "unreadable".into());
            line.insert("error".into(), format!("{other:?}").into());
        }
    }
    serde_json::Value::Object(line).to_string()
}

/// One line on stdout, flushed so a pipe sees each event as it happens. A
/// closed stdout does not stop the rollout.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // 2026-12-02T15:08:16.123Z
    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_224_096_123)
    }

    #[test]
    fn plain_lines_start_with_the_utc_time_of_day() {
        let line = display::line(at(), &Progress::AlertmanagerReachable);
        assert_eq!(line, "[15:08:16.1]   alertmanager: reachable again");
    }

    #[test]
    fn json_lines_carry_the_time_and_the_event() {
        let line = json(
            at(),
            &Progress::SaltJobRunning {
                jid: "20261202".into(),
            },
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"at": "2026-12-02T15:08:16.123Z", "event": "salt_job_running", "jid": "20261202"})
        );
    }
}
