//! What a person sees of `rollout apply`'s live display in a terminal,
//! checked on the bytes a pseudo-terminal recorded (`script`'s typescript).

/// Asserts the bytes show the live display: the block redrawn in place
/// (cursor up, lines cleared), a bar of the stage's batches
/// (`[####....] n/N done`), a bake countdown (`bake 12s left of 30s`), and
/// the final state on the first line.
pub fn assert_live_display(tty: &str) {
    assert!(
        tty.contains("\u{1b}[2K") && tty.contains("A\r\u{1b}[2K"),
        "the block is not redrawn in place:\n{tty}"
    );
    let bar = tty.split('[').skip(1).any(|rest| {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        inside.len() == 20
            && inside.chars().all(|c| c == '#' || c == '.')
            && after.split_whitespace().nth(1).is_some_and(|w| w == "done")
    });
    assert!(bar, "no batch bar `[####....] n/N done`:\n{tty}");
    let countdown = tty.split("bake").skip(1).any(|rest| {
        let rest = rest.trim_start();
        rest.split_once(" left of ").is_some_and(|(left, _)| {
            left.trim_end_matches('s')
                .chars()
                .all(|c| c.is_ascii_digit())
        })
    });
    assert!(
        countdown,
        "no bake countdown `bake 12s left of 30s`:\n{tty}"
    );
    assert!(
        tty.contains("· succeeded"),
        "the display ends succeeded:\n{tty}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drawn_display_passes_and_plain_lines_do_not() {
        let drawn = "rollout r-1: connector v2 · baking\r\n  batch 1/2 [##########..........] 1/2 done\r\n  bake     3s left of 4s\r\n\u{1b}[3A\r\u{1b}[2Krollout r-1: connector v2 · succeeded\r\n";
        assert_live_display(drawn);
        let plain = "[15:08:16.1] stage 1/1 `all` batch 1/2\n[15:08:20.1] succeeded\n";
        assert!(std::panic::catch_unwind(|| assert_live_display(plain)).is_err());
    }
}
