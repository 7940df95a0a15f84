//! `rollout validate -f SPEC`: check a spec offline and say what it holds,
//! or name every problem with its field's path.

use std::process::ExitCode;

use rollout::cli::ValidateArgs;

use super::shared::load_spec;

pub fn run(args: ValidateArgs) -> ExitCode {
    let s = match load_spec(&args.spec) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let cohorts: usize = s.parts.iter().map(|p| p.cohorts.len()).sum();
    println!(
        "{}: valid ({} over {} cohorts, {} gates)",
        args.spec.display(),
        s.describe(),
        cohorts,
        s.gates.len()
    );
    ExitCode::SUCCESS
}
