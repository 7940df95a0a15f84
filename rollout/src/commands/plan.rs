//! `rollout plan -f SPEC`: read the fleet, print what a rollout would do,
//! and optionally write the plan file that `apply` takes. Exits 2 when the
//! plan cannot be executed as written.

use std::process::ExitCode;

use rollout::cli::{Connect, Output, PlanArgs};

use super::shared::{EXIT_NOT_EXECUTABLE, controller, fail, load_spec, plan_file};

pub async fn run(connect: Connect, args: PlanArgs) -> ExitCode {
    let s = match load_spec(&args.spec) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let controller = match controller(connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let plan = match controller.plan(&s).await {
        Ok(p) => p,
        Err(e) => return fail(1, &format!("cannot plan: {e}")),
    };
    if let Some(path) = args.out
        && let Err(e) = std::fs::write(&path, plan_file(&s, &plan))
    {
        return fail(1, &format!("cannot write {}: {e}", path.display()));
    }
    match args.output {
        Output::Json => println!("{}", plan.to_json()),
        Output::Auto | Output::Tty | Output::Plain => print!("{}", plan.render_table()),
    }
    if plan.executable() {
        return ExitCode::SUCCESS;
    }
    eprintln!("rollout: the plan cannot be executed as written:");
    for p in &plan.problems {
        eprintln!("  - {p}");
    }
    ExitCode::from(EXIT_NOT_EXECUTABLE)
}
