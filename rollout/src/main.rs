//! `rollout`: parse, build, run the command.

use std::process::ExitCode;

use clap::Parser;
use rollout::cli::{Cli, Command, Output};
use rollout::spec::{Spec, SpecError};

/// Exit codes beyond success and failure.
const EXIT_NOT_EXECUTABLE: u8 = 2;
const EXIT_INVALID_SPEC: u8 = 65;

fn main() -> ExitCode {
    let cli = Cli::parse();
    daemon::logging::init(daemon::logging::LogFormat::Text, "ROLLOUT_LOG");
    match cli.command {
        Command::Validate { spec } => match load_spec(&spec) {
            Ok(s) => {
                println!(
                    "{}: valid ({} {} over {} cohorts, {} gates)",
                    spec.display(),
                    s.component,
                    s.version,
                    s.cohorts.len(),
                    s.gates.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Plan { spec, out, output } => {
            let s = match load_spec(&spec) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let controller = match cli.connect.controller() {
                Ok(c) => c,
                Err(e) => return fail(daemon::EXIT_CONFIG as u8, &e.to_string()),
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return fail(1, &format!("cannot start the async runtime: {e}")),
            };
            let plan = match runtime.block_on(controller.plan(&s)) {
                Ok(p) => p,
                Err(e) => return fail(1, &format!("cannot plan: {e}")),
            };
            if let Some(path) = out
                && let Err(e) = std::fs::write(&path, plan.to_json())
            {
                return fail(1, &format!("cannot write {}: {e}", path.display()));
            }
            match output {
                Output::Table => print!("{}", plan.render_table()),
                Output::Json => println!("{}", plan.to_json()),
            }
            if plan.executable() {
                ExitCode::SUCCESS
            } else {
                eprintln!("rollout: the plan cannot be executed as written:");
                for p in &plan.problems {
                    eprintln!("  - {p}");
                }
                ExitCode::from(EXIT_NOT_EXECUTABLE)
            }
        }
    }
}

fn load_spec(path: &std::path::Path) -> Result<Spec, ExitCode> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(
            daemon::EXIT_CONFIG as u8,
            &format!("cannot read {}: {e}", path.display()),
        )
    })?;
    Spec::from_yaml(&text).map_err(|e| match e {
        SpecError::Invalid(problems) => {
            eprintln!(
                "rollout: {} has {} problem(s):",
                path.display(),
                problems.len()
            );
            for p in problems {
                eprintln!("  {p}");
            }
            ExitCode::from(EXIT_INVALID_SPEC)
        }
        other => fail(EXIT_INVALID_SPEC, &format!("{}: {other}", path.display())),
    })
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("rollout: {msg}");
    ExitCode::from(code)
}
