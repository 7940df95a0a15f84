//! The terminal's views of the engine's progress events: plain lines for
//! people (wall-clock time in UTC, then the event's text) or one JSON
//! object per line for programs. The engine knows neither.

use std::io::Write;
use std::time::SystemTime;

use rollout::cli::Output;
use rollout::progress::Progress;

/// Where a command sends progress events, as `--output` asks.
pub fn view(output: Output) -> fn(&Progress) {
    match output {
        Output::Table => |event| emit(&plain(SystemTime::now(), event)),
        Output::Json => |event| emit(&json(SystemTime::now(), event)),
    }
}

/// `[15:08:16.1] stage 1/3 ...`: the time of day in UTC, to a tenth of a
/// second, as people read it next to other logs.
fn plain(at: SystemTime, event: &Progress) -> String {
    let stamp = humantime::format_rfc3339_millis(at).to_string();
    // `2026-12-02T15:08:16.123Z`: the time of day is at 11..21.
    let clock = stamp.get(11..21).unwrap_or(&stamp);
    format!("[{clock}] {event}")
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
        let line = plain(at(), &Progress::AlertmanagerReachable);
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
