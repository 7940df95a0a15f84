//! Plans a synthetic fleet: 10,000 hosts in 300 data centers, three cohorts
//! (canary, ams + fra, the rest). Prints the time of each step (median, min
//! and max of several runs) and the peak memory (VmHWM) as a markdown table.
//! Run with `scripts/bench-plan`. Not a test: no thresholds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rollout::inventory::{Host, Inventory};
use rollout::plan::Plan;
use rollout::spec::Spec;

const HOSTS: usize = 10_000;
const DATACENTERS: usize = 300;

const SPEC: &str = r#"
component: edge
version: v2
artifact:
  url: salt://releases/edge/v2/edge-v2.tar.gz
  sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
cohorts:
  - name: canary
    target: G@cohort:canary and G@role:edge
    batch: 1
    bake: 10m
  - name: ams-fra
    target: G@role:edge and ( G@datacenter:ams or G@datacenter:fra )
    batch: 50%
    bake: 15m
  - name: rest
    target: G@role:edge
    batch: 10%
    bake: 10m
"#;

fn datacenter(i: usize) -> String {
    match i {
        0 => "ams".into(),
        1 => "fra".into(),
        n => format!("dc{n:03}"),
    }
}

/// Hosts spread evenly over the data centers; every 500th is a canary,
/// every 20th already runs v2, every 1000th has no known version.
fn fleet() -> Vec<Host> {
    (0..HOSTS)
        .map(|i| {
            let dc = datacenter(i % DATACENTERS);
            Host {
                id: format!("edge-{dc}-{:03}", i / DATACENTERS),
                datacenter: dc,
                cohort: if i % 500 == 7 { "canary" } else { "main" }.into(),
                role: "edge".into(),
                version: match i {
                    i if i % 1000 == 3 => None,
                    i if i % 20 == 0 => Some("v2".into()),
                    _ => Some("v1".into()),
                },
                reachable: true,
            }
        })
        .rev() // Salt does not answer in order.
        .collect()
}

/// What the cohorts' Salt targets would match.
fn matches(hosts: &[Host]) -> BTreeMap<String, Vec<String>> {
    let pick = |f: &dyn Fn(&Host) -> bool| -> Vec<String> {
        hosts
            .iter()
            .filter(|h| f(h))
            .map(|h| h.id.clone())
            .collect()
    };
    BTreeMap::from([
        ("canary".into(), pick(&|h| h.cohort == "canary")),
        (
            "ams-fra".into(),
            pick(&|h| h.datacenter == "ams" || h.datacenter == "fra"),
        ),
        ("rest".into(), pick(&|_| true)),
    ])
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn time<T>(samples: &mut Vec<Duration>, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = std::hint::black_box(f());
    samples.push(start.elapsed());
    out
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let hwm_start = vm_hwm_kib();
    let spec = Spec::from_yaml(SPEC).expect("the bench spec is valid");
    let hosts = fleet();
    let m = matches(&hosts);

    let steps = [
        "inventory (sort, check)",
        "fingerprint",
        "plan",
        "PLAN.json",
        "table",
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); steps.len()];
    let mut last = None;
    for _ in 0..runs {
        let inv = time(&mut samples[0], || Inventory::new(hosts.clone()).unwrap());
        time(&mut samples[1], || inv.fingerprint());
        let plan = time(&mut samples[2], || Plan::build(&spec, &inv, &m));
        let json = time(&mut samples[3], || plan.to_json());
        time(&mut samples[4], || plan.render_table());
        last = Some((plan, json.len()));
    }
    let (plan, json_len) = last.expect("at least one run");
    let hwm_end = vm_hwm_kib();

    println!(
        "Plan of {HOSTS} hosts in {DATACENTERS} data centers, 3 cohorts: {} host(s) to update in {} batch(es), {} skipped; PLAN.json {:.1} MiB; {runs} runs",
        plan.host_count(),
        plan.batch_count(),
        plan.stages.iter().map(|s| s.skipped.len()).sum::<usize>(),
        json_len as f64 / (1024.0 * 1024.0),
    );
    println!();
    println!("| step | median | min | max |");
    println!("|---|---:|---:|---:|");
    for (name, s) in steps.iter().zip(samples.iter_mut()) {
        s.sort();
        println!(
            "| {name} | {} | {} | {} |",
            ms(s[s.len() / 2]),
            ms(s[0]),
            ms(s[s.len() - 1])
        );
    }
    let kib = |v: Option<u64>| {
        v.map_or("n/a".to_string(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        })
    };
    println!("| peak memory (VmHWM) at start | {} | | |", kib(hwm_start));
    println!("| peak memory (VmHWM) at end | {} | | |", kib(hwm_end));
}
