//! The live progress display of a rollout on a terminal: a block of lines
//! (the stage, a bar of the stage's batches, the batch's hosts, the bake
//! countdown, the last value of each gate against its condition, the last
//! events) redrawn in place with ANSI escapes, on each event and while a
//! bake counts down. When the run ends the block stays and the final line
//! is printed under it. It is a view of the engine's progress events like
//! the plain and JSON lines, and knows nothing about them.

mod board;
mod screen;

use std::io::{self, Write};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::MissedTickBehavior;

pub use board::Board;
pub use screen::Screen;

use crate::progress::Progress;

/// How often the countdown is redrawn when no event comes.
const TICK: Duration = Duration::from_millis(250);

/// The terminal width when $COLUMNS does not say.
const DEFAULT_WIDTH: usize = 100;

/// An event and the wall-clock time it happened at.
pub type Stamped = (SystemTime, Progress);

/// Draws the events into `out` until the sender is dropped. Lines are cut
/// to `width` so none wraps and breaks the redraw. Events after the final
/// one (the timeline of an alert rollback) are printed as plain lines under
/// it. Returns the first write error: a closed terminal ends the display,
/// not the rollout.
pub async fn run<W: Write>(
    mut events: UnboundedReceiver<Stamped>,
    out: &mut W,
    width: usize,
) -> io::Result<()> {
    let mut board = Board::default();
    let mut screen = Screen::new(width);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some((at, event)) = event else { break };
                if board.ended().is_some() {
                    screen.print(out, &line(at, &event))?;
                    continue;
                }
                board.apply(at, &event, Instant::now());
                screen.draw(out, &board.render(Instant::now()))?;
                if let Some(last) = board.ended() {
                    screen.leave();
                    screen.print(out, last)?;
                }
            }
            _ = ticker.tick() => {
                if board.counting() {
                    screen.draw(out, &board.render(Instant::now()))?;
                }
            }
        }
    }
    Ok(())
}

/// `[15:08:16.1] stage 1/3 ...`: the time of day in UTC, to a tenth of a
/// second, then the event's text, as the plain view prints it.
pub fn line(at: SystemTime, event: &Progress) -> String {
    format!("[{}] {event}", clock(at))
}

/// `15:08:16.1`: the time of day in UTC, as people read it next to other
/// logs.
pub fn clock(at: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_millis(at).to_string();
    // `2026-12-02T15:08:16.123Z`: the time of day is at 11..21.
    stamp.get(11..21).unwrap_or(&stamp).to_string()
}

/// The terminal's width: $COLUMNS, else 100 (rollout has no `libc` for the
/// ioctl that would ask the terminal).
pub fn width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|w| *w > 0)
        .unwrap_or(DEFAULT_WIDTH)
}

#[cfg(test)]
mod tests;
