//! The display given sequences of events: the block a person reads, and
//! the bytes a terminal gets, replayed on a small model of a terminal.

use std::time::{Duration, Instant, SystemTime};

use super::screen::cut;
use super::*;
use crate::gate::{Measurement, Outcome, Phase};
use crate::store::RolloutId;

// 2026-12-02T15:08:16.123Z
fn at(ms_later: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_224_096_123 + ms_later)
}

fn id() -> RolloutId {
    RolloutId("r-1".into())
}

fn started() -> Progress {
    Progress::Started {
        rollout: id(),
        what: "edge v2".into(),
    }
}

fn batch(stage: usize, cohort: &str, batch: usize, hosts: &[&str]) -> Progress {
    Progress::BatchStarted {
        stage,
        stages: 3,
        cohort: cohort.into(),
        batch,
        batches: 4,
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
    }
}

fn baking() -> Progress {
    Progress::Baking {
        bake_ms: 30_000,
        gates: 1,
    }
}

fn gate(value: f64, verdict: Outcome) -> Progress {
    Progress::gate(
        "error_ratio",
        &Measurement::Value(value),
        verdict,
        Phase::Running,
        "< 0.01",
    )
}

/// Events one second apart, all seen at `now`.
fn board(events: &[Progress], now: Instant) -> Board {
    let mut b = Board::default();
    for (i, e) in events.iter().enumerate() {
        b.apply(at(i as u64 * 1000), e, now);
    }
    b
}

#[test]
fn the_block_shows_stage_bar_hosts_bake_and_gate() {
    let now = Instant::now();
    let events = [
        started(),
        batch(1, "canary", 1, &["edge-ams-1"]),
        Progress::BatchDone {
            stage: 1,
            batch: 1,
            cohort: "canary".into(),
        },
        batch(2, "ams-fra", 2, &["edge-ams-2", "edge-fra-2"]),
        baking(),
        gate(0.0012, Outcome::Successful),
    ];
    let b = board(&events, now);
    let block = b.render(now + Duration::from_millis(17_600));
    assert_eq!(
        block,
        [
            "rollout r-1: edge v2 · baking",
            "stage 2/3 `ams-fra`  batch 2/4 [#####...............] 1/4 done",
            "  stages  canary ✓  ams-fra ▸  +1",
            "  hosts   edge-ams-2, edge-fra-2",
            "  bake    12s left of 30s, 1 gate(s)",
            "  gate    error_ratio 0.0012 < 0.01 ✓",
            "[15:08:17.1] stage 1/3 `canary`, batch 1/4: edge-ams-1",
            "[15:08:18.1]   batch 1 of `canary` done",
            "[15:08:19.1] stage 2/3 `ams-fra`, batch 2/4: edge-ams-2, edge-fra-2",
            "[15:08:20.1]   baking 30s with 1 gate(s)",
            "[15:08:21.1]   gate error_ratio: 0.0012 (Successful, < 0.01)",
        ]
    );
    assert!(b.counting(), "a bake counts down");
}

#[test]
fn the_countdown_goes_down_with_time_alone() {
    let now = Instant::now();
    let b = board(&[started(), batch(1, "canary", 1, &["e1"]), baking()], now);
    let bake_line = |later_ms| {
        b.render(now + Duration::from_millis(later_ms))
            .into_iter()
            .find(|l| l.starts_with("  bake"))
            .unwrap()
    };
    assert_eq!(bake_line(0), "  bake    30s left of 30s, 1 gate(s)");
    assert_eq!(bake_line(5_400), "  bake    25s left of 30s, 1 gate(s)");
    assert_eq!(bake_line(40_000), "  bake    0s left of 30s, 1 gate(s)");
}

#[test]
fn a_gate_shows_its_last_value_or_its_problem() {
    let now = Instant::now();
    let no_data = Progress::gate(
        "requests",
        &Measurement::NoData,
        Outcome::Inconclusive,
        Phase::Inconclusive,
        "> 0",
    );
    let b = board(
        &[
            gate(0.0012, Outcome::Successful),
            no_data,
            gate(0.25, Outcome::Failed),
        ],
        now,
    );
    let gates: Vec<String> = b
        .render(now)
        .into_iter()
        .filter(|l| l.starts_with("  gate "))
        .collect();
    assert_eq!(
        gates,
        [
            "  gate    error_ratio 0.25 < 0.01 ✗",
            "  gate    requests no data > 0 ?"
        ]
    );
}

#[test]
fn a_rollback_shows_its_reason_and_the_hosts_back() {
    let now = Instant::now();
    let back = |host: &str| Progress::HostBack {
        host: host.into(),
        component: crate::spec::Component::Edge,
        version: Some("v1".into()),
    };
    let b = board(
        &[
            started(),
            batch(1, "canary", 1, &["e1", "e2"]),
            baking(),
            Progress::RollingBack {
                reason: "gate error_ratio failed".into(),
            },
            back("e2"),
            back("e1"),
        ],
        now,
    );
    let block = b.render(now);
    assert_eq!(block[0], "rollout r-1: edge v2 · rolling back");
    assert!(block.contains(&"  ROLLING BACK: gate error_ratio failed".to_string()));
    assert!(block.contains(&"  hosts back: 2".to_string()));
    assert!(!block.iter().any(|l| l.contains("left of")), "{block:?}");
    assert!(!b.counting());
}

#[test]
fn the_bar_fills_with_the_batches_done() {
    let now = Instant::now();
    let bar_of = |events: &[Progress]| {
        let line = board(events, now).render(now)[1].clone();
        line.split(' ')
            .find(|w| w.starts_with('['))
            .unwrap()
            .to_string()
    };
    let done = |n| Progress::BatchDone {
        stage: 1,
        batch: n,
        cohort: "c".into(),
    };
    assert_eq!(
        bar_of(&[batch(1, "c", 1, &["e"])]),
        "[....................]"
    );
    // A resumed rollout starts at batch 3: two are done already.
    assert_eq!(
        bar_of(&[batch(1, "c", 3, &["e"])]),
        "[##########..........]"
    );
    assert_eq!(
        bar_of(&[batch(1, "c", 4, &["e"]), done(4)]),
        "[####################]"
    );
}

#[test]
fn lines_are_cut_to_the_width_and_never_wrap() {
    assert_eq!(cut("stage 1/3", 80), "stage 1/3");
    assert_eq!(cut("abcdefghij", 8), "abcdef…");
    assert_eq!(cut("abcdefghij", 8).chars().count(), 7);
    assert_eq!(cut("✓✓✓✓✓", 4), "✓✓…");
    assert_eq!(cut("abc", 0), "…");
}

#[test]
fn plain_lines_start_with_the_utc_time_of_day() {
    let line = line(at(0), &Progress::AlertmanagerReachable);
    assert_eq!(line, "[15:08:16.1]   alertmanager: reachable again");
}

/// The rows a terminal shows after these bytes, for the escapes the
/// display writes: `\r`, `\n`, cursor up (`ESC[nA`), clear line (`ESC[2K`)
/// and clear below (`ESC[J`). Panics on anything else, and on a row wider
/// than `width` (it would have wrapped).
fn replay(bytes: &[u8], width: usize) -> Vec<String> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let mut rows: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                row += 1;
                col = 0;
                if rows.len() <= row {
                    rows.push(Vec::new());
                }
            }
            '\x1b' => {
                assert_eq!(chars.next(), Some('['));
                let mut arg = String::new();
                while let Some(d) = chars.next_if(|d| d.is_ascii_digit()) {
                    arg.push(d);
                }
                match chars.next() {
                    Some('A') => row -= arg.parse::<usize>().unwrap(),
                    Some('K') if arg == "2" => rows[row].clear(),
                    Some('J') if arg.is_empty() => {
                        rows[row].truncate(col);
                        rows.truncate(row + 1);
                    }
                    other => panic!("unexpected escape {arg:?} {other:?}"),
                }
            }
            c => {
                let line = &mut rows[row];
                if line.len() <= col {
                    line.resize(col + 1, ' ');
                }
                line[col] = c;
                col += 1;
                assert!(col <= width, "row {row} wrapped: {line:?}");
            }
        }
    }
    let mut rows: Vec<String> = rows.into_iter().map(|r| r.into_iter().collect()).collect();
    if rows.last().is_some_and(String::is_empty) {
        rows.pop();
    }
    rows
}

/// Runs the display on these events (stamped one second apart) and
/// returns the bytes it wrote.
async fn drawn(events: Vec<Progress>, width: usize) -> Vec<u8> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, e) in events.into_iter().enumerate() {
        tx.send((at(i as u64 * 1000), e)).unwrap();
    }
    drop(tx);
    let mut out = Vec::new();
    run(rx, &mut out, width).await.unwrap();
    out
}

#[tokio::test]
async fn a_terminal_sees_the_block_redrawn_in_place_and_the_final_line() {
    let long_host = format!("edge-{}", "x".repeat(120));
    let events = vec![
        started(),
        batch(1, "canary", 1, &["edge-ams-1", &long_host]),
        baking(),
        gate(0.0012, Outcome::Successful),
        Progress::BatchDone {
            stage: 1,
            batch: 1,
            cohort: "canary".into(),
        },
        batch(1, "canary", 2, &["edge-fra-1"]),
        baking(),
        gate(0.0009, Outcome::Successful),
        Progress::BatchDone {
            stage: 1,
            batch: 2,
            cohort: "canary".into(),
        },
        Progress::Succeeded {
            rollout: id(),
            what: "edge v2".into(),
        },
        // After the end: printed under the block, not in it.
        Progress::Timeline,
    ];
    let out = drawn(events, 80).await;
    let text = String::from_utf8_lossy(&out);
    // What proves to a person (and the lead's pty test) that the display
    // was drawn: the cursor goes back up, a bar, a countdown.
    assert!(cursor_up(&text), "{text:?}");
    assert!(text.contains("[#####...............] 1/4 done"), "{text:?}");
    assert!(text.contains("bake    30s left of 30s"), "{text:?}");
    assert_eq!(
        replay(&out, 80),
        [
            "rollout r-1: edge v2 · succeeded",
            "stage 1/3 `canary`  batch 2/4 [##########..........] 2/4 done",
            "  stages  canary ▸  +2",
            "  hosts   edge-fra-1",
            "  gate    error_ratio 0.0009 < 0.01 ✓",
            "[15:08:20.1]   batch 1 of `canary` done",
            "[15:08:21.1] stage 1/3 `canary`, batch 2/4: edge-fra-1",
            "[15:08:22.1]   baking 30s with 1 gate(s)",
            "[15:08:23.1]   gate error_ratio: 0.0009 (Successful, < 0.01)",
            "[15:08:24.1]   batch 2 of `canary` done",
            "[15:08:25.1] rollout r-1 succeeded: edge v2 everywhere planned",
            "[15:08:26.1] timeline:",
        ]
    );
}

/// Whether the text moves the cursor up (`ESC[nA`).
fn cursor_up(text: &str) -> bool {
    text.split("\x1b[").skip(1).any(|rest| {
        rest.trim_start_matches(|c: char| c.is_ascii_digit())
            .starts_with('A')
    })
}

#[tokio::test]
async fn a_long_line_is_cut_while_it_is_redrawn() {
    let long_host = format!("edge-{}", "x".repeat(120));
    let out = drawn(vec![started(), batch(1, "canary", 1, &[&long_host])], 40).await;
    let rows = replay(&out, 40);
    // 39 columns: the last one stays free.
    assert_eq!(rows[3], format!("  hosts   edge-{}…", "x".repeat(23)));
    assert!(rows.iter().all(|r| r.chars().count() < 40), "{rows:?}");
}

#[tokio::test]
async fn events_with_no_final_one_leave_the_last_block() {
    let out = drawn(
        vec![started(), batch(1, "canary", 1, &["e1"]), baking()],
        80,
    )
    .await;
    let rows = replay(&out, 80);
    assert_eq!(rows[0], "rollout r-1: edge v2 · baking");
    assert_eq!(rows[4], "  bake    30s left of 30s, 1 gate(s)");
    assert_eq!(rows.len(), 8, "{rows:?}");
}
