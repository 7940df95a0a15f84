//! The terminal side of the live display: draws a block of lines, and on
//! the next draw moves the cursor back up over it and draws it again.

use std::io::{self, Write};

/// Cursor up by n lines: `ESC [ n A`.
fn up(n: usize) -> String {
    format!("\x1b[{n}A")
}
/// Clears the line the cursor is on.
const CLEAR_LINE: &str = "\x1b[2K";
/// Clears from the cursor to the end of the screen: what a taller block
/// drawn before left below this one.
const CLEAR_BELOW: &str = "\x1b[J";

/// A block redrawn in place.
#[derive(Debug)]
pub struct Screen {
    width: usize,
    /// Lines of the block on screen above the cursor.
    drawn: usize,
}

impl Screen {
    /// A screen `width` columns wide, nothing drawn yet.
    pub fn new(width: usize) -> Screen {
        Screen { width, drawn: 0 }
    }

    /// Draws `lines` over the block drawn before, each cut to the width:
    /// a line that wrapped would take two rows and the next cursor move
    /// would land inside the block.
    pub fn draw(&mut self, out: &mut impl Write, lines: &[String]) -> io::Result<()> {
        let mut frame = String::new();
        if self.drawn > 0 {
            frame.push_str(&up(self.drawn));
        }
        for line in lines {
            frame.push('\r');
            frame.push_str(CLEAR_LINE);
            frame.push_str(&cut(line, self.width));
            frame.push('\n');
        }
        frame.push_str(CLEAR_BELOW);
        self.drawn = lines.len();
        // One write per frame, so the terminal never shows half a block.
        out.write_all(frame.as_bytes())?;
        out.flush()
    }

    /// Leaves the block drawn as it is: what follows goes under it.
    pub fn leave(&mut self) {
        self.drawn = 0;
    }

    /// A line under the block, whole: it is never redrawn, so it may wrap.
    pub fn print(&mut self, out: &mut impl Write, line: &str) -> io::Result<()> {
        writeln!(out, "{line}")?;
        out.flush()
    }
}

/// `line`, cut to fit in `width` columns with `…` at the end. One column is
/// left free: some terminals wrap as soon as the last one is written.
/// Every character of the display takes one column (no wide characters).
pub fn cut(line: &str, width: usize) -> String {
    let room = width.saturating_sub(1).max(1);
    if line.chars().count() <= room {
        return line.to_string();
    }
    let mut short: String = line.chars().take(room - 1).collect();
    short.push('…');
    short
}
