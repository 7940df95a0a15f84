//! The README's main job, run as a user runs it: edge v2 then connector v2
//! over the whole fleet under load with no failed request, then a bad v3
//! that a real alert rolls back, every edge ending on v2, and no process
//! left behind.

use std::process::Command;

use tests::bins::bin;

#[test]
fn the_main_job_rolls_v2_out_and_lets_an_alert_roll_the_bad_v3_back() {
    let out = Command::new(bin("demo")).output().expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("succeeded"), "{stdout}");
    // Both version tables (after v2, after v3's rollback) show v2 everywhere.
    let mut tables = 0;
    let mut lines = stdout.lines().peekable();
    while let Some(line) = lines.next() {
        if !line.contains("edge versions in Prometheus") {
            continue;
        }
        tables += 1;
        let mut rows = 0;
        while let Some(row) = lines.next_if(|l| l.trim_start().starts_with("edge-")) {
            assert!(row.trim_end().ends_with("v2"), "{row}\n{stdout}");
            rows += 1;
        }
        assert_eq!(rows, 6, "{stdout}");
    }
    assert_eq!(tables, 2, "{stdout}");
    // The timeline of the alert rollback, every moment known.
    for moment in [
        "first bad sample",
        "alert firing",
        "alert received by",
        "rollback started",
        "every touched host back on the good release",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(moment))
            .unwrap_or_else(|| panic!("no `{moment}` in the timeline:\n{stdout}"));
        assert!(line.contains(" s "), "`{moment}` has no time: {line}");
    }
    assert!(
        stdout.contains("ALERT EdgeReleaseErrorRatioHigh"),
        "{stdout}"
    );
    // Edge v2 then connector v2 under load, nothing failed: the last line.
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("load: ") && last.contains(" requests, 0 failed"),
        "the demo does not end with the load's count: {last:?}\n{stdout}"
    );
}
