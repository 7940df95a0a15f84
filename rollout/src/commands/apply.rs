//! `rollout apply PLAN.json` or `rollout apply -f SPEC`: show the plan, ask
//! (unless --yes), start the rollout in the store and run it here, one
//! progress line (or JSON object) per event. Exits as the rollout ended (`Outcome::exit_code`).
//! With `--server`, the plan is submitted to the controller service instead,
//! which runs it, and `apply` follows it there.

use std::io::IsTerminal;
use std::process::ExitCode;

use rollout::cli::{ApplyArgs, Connect, Output};
use rollout::client::Client;
use rollout::controller::Controller;
use rollout::engine::{Engine, Outcome};
use rollout::plan::Plan;
use rollout::progress::Progress;
use rollout::spec::Spec;
use rollout::status;

use super::events::view;
use super::shared::{
    EXIT_INVALID_SPEC, connect_store, database, fail, load_spec, plan_file, read_plan_file,
};

pub async fn run(connect: Connect, args: ApplyArgs) -> ExitCode {
    match super::remote::client(&connect) {
        Err(code) => return code,
        Ok(Some(client)) => return through_server(connect, &client, args).await,
        Ok(None) => {}
    }
    let database = match database(&connect) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let controller = match super::shared::controller(connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (s, p) = match spec_and_plan(&controller, args.plan, args.spec).await {
        Ok(sp) => sp,
        Err(code) => return code,
    };
    // With JSON lines on stdout, the table a person confirms goes to stderr.
    match args.output {
        Output::Table => print!("{}", p.render_table()),
        Output::Json => eprint!("{}", p.render_table()),
    }
    if !args.yes
        && let Err(code) = confirm()
    {
        return code;
    }
    let store = match connect_store(&database).await {
        Ok(st) => st,
        Err(code) => return code,
    };
    let say = view(args.output);
    let engine = Engine {
        controller: &controller,
        store: &store,
        progress: &say,
    };
    let id = match engine.start(&s, &p).await {
        Ok(id) => id,
        Err(e) => return fail(1, &format!("not started: {e}")),
    };
    say(&Progress::Started {
        rollout: id.clone(),
        what: s.describe(),
    });
    match engine.run(&id).await {
        Ok(outcome) => {
            if let Outcome::RolledBack(reason) | Outcome::Failed(reason) = &outcome {
                eprintln!("rollout: {id}: {reason}");
            }
            ExitCode::from(outcome.exit_code())
        }
        Err(e) => fail(
            1,
            &format!("rollout {id} stopped: {e}; run `rollout apply` again to resume"),
        ),
    }
}

/// `apply --server`: the plan (a plan file as written, or the spec planned
/// here) is shown, confirmed, submitted, then followed.
async fn through_server(connect: Connect, client: &Client, args: ApplyArgs) -> ExitCode {
    let (s, p) = match (&args.plan, &args.spec) {
        (Some(file), _) => match read_plan_file(file) {
            Ok(sp) => sp,
            Err(e) => return fail(EXIT_INVALID_SPEC, &e),
        },
        _ => {
            let controller = match super::shared::controller(connect) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match spec_and_plan(&controller, args.plan, args.spec).await {
                Ok(sp) => sp,
                Err(code) => return code,
            }
        }
    };
    let format = match args.output {
        Output::Table => {
            print!("{}", p.render_table());
            status::Format::Table
        }
        Output::Json => {
            eprint!("{}", p.render_table());
            status::Format::Json
        }
    };
    if !args.yes
        && let Err(code) = confirm()
    {
        return code;
    }
    super::remote::submit_and_follow(client, plan_file(&s, &p), format).await
}

/// The plan file as written, or the spec planned now.
async fn spec_and_plan(
    controller: &Controller,
    plan: Option<std::path::PathBuf>,
    spec: Option<std::path::PathBuf>,
) -> Result<(Spec, Plan), ExitCode> {
    match (plan, spec) {
        (Some(file), _) => read_plan_file(&file).map_err(|e| fail(EXIT_INVALID_SPEC, &e)),
        (None, Some(file)) => {
            let s = load_spec(&file)?;
            match controller.plan(&s).await {
                Ok(p) => Ok((s, p)),
                Err(e) => Err(fail(1, &format!("cannot plan: {e}"))),
            }
        }
        (None, None) => Err(fail(daemon::EXIT_USAGE as u8, "give PLAN.json or -f SPEC")),
    }
}

/// A person at a terminal says yes; anything else leaves the fleet alone.
fn confirm() -> Result<(), ExitCode> {
    if !std::io::stdin().is_terminal() {
        return Err(fail(
            daemon::EXIT_USAGE as u8,
            "not a terminal: pass --yes to apply without confirmation",
        ));
    }
    eprint!("apply this plan? [y/N] ");
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err()
        || !matches!(answer.trim(), "y" | "Y" | "yes")
    {
        return Err(fail(1, "not applied"));
    }
    Ok(())
}
