//! The README's main job, run as a user runs it: it must end with every edge
//! on the new version and leave no process behind.

use std::process::Command;

use tests::bins::bin;

#[test]
fn the_main_job_rolls_edge_v2_over_the_whole_local_fleet() {
    let out = Command::new(bin("demo")).output().expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("succeeded"), "{stdout}");
    let versions: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("edge versions in Prometheus"))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("edge-"))
        .collect();
    assert_eq!(versions.len(), 6, "{stdout}");
    assert!(
        versions.iter().all(|l| l.trim_end().ends_with("v2")),
        "{stdout}"
    );
}
