//! What the commands share: exit codes, the one way a failure is printed,
//! reading a spec or a plan file, and reaching the store and the outside
//! systems. A helper that fails has printed why and returns the exit code.

use std::path::Path;
use std::process::ExitCode;

use rollout::cli::Connect;
use rollout::controller::Controller;
use rollout::engine::{EngineError, Outcome};
use rollout::plan::Plan;
use rollout::spec::{Spec, SpecError};
use rollout::store::{RolloutId, Store};

/// The plan is not executable as written.
pub const EXIT_NOT_EXECUTABLE: u8 = 2;
/// The spec is invalid (EX_DATAERR).
pub const EXIT_INVALID_SPEC: u8 = 65;

/// Print `rollout: MSG` on stderr and give `code` back.
pub fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("rollout: {msg}");
    ExitCode::from(code)
}

/// The database URL (flag, config file or default); a bad config file is a
/// config error.
pub fn database(connect: &Connect) -> Result<String, ExitCode> {
    connect
        .database()
        .map_err(|e| fail(daemon::EXIT_CONFIG as u8, &e.to_string()))
}

/// Salt, Prometheus and the optional systems, or the setting that is
/// missing (a config error).
pub fn controller(connect: Connect) -> Result<Controller, ExitCode> {
    connect
        .controller()
        .map_err(|e| fail(daemon::EXIT_CONFIG as u8, &e.to_string()))
}

/// Open the store at `url`, creating a SQLite file and migrating as needed.
pub async fn connect_store(url: &str) -> Result<Store, ExitCode> {
    Store::connect(url)
        .await
        .map_err(|e| fail(1, &format!("cannot open the store: {e}")))
}

/// The store the settings name.
pub async fn open_store(connect: &Connect) -> Result<Store, ExitCode> {
    connect_store(&database(connect)?).await
}

/// The controller and the store, for a command that drives the engine.
pub async fn attach(connect: Connect) -> Result<(Controller, Store), ExitCode> {
    let database = database(&connect)?;
    let controller = controller(connect)?;
    let store = connect_store(&database).await?;
    Ok((controller, store))
}

/// The rollout `id` names, or the newest one.
pub async fn pick(store: &Store, id: Option<String>) -> Result<RolloutId, ExitCode> {
    match id {
        Some(id) => Ok(RolloutId(id)),
        None => match store.list().await {
            Ok(all) => all
                .into_iter()
                .max_by_key(|r| r.created_at)
                .map(|r| r.id)
                .ok_or_else(|| fail(1, "no rollout yet")),
            Err(e) => Err(fail(1, &e.to_string())),
        },
    }
}

/// The exit code and the closing message of a resumed or aborted run.
pub fn finish(id: &RolloutId, result: Result<Outcome, EngineError>) -> ExitCode {
    match result {
        Ok(outcome) => {
            match &outcome {
                Outcome::RolledBack(reason) | Outcome::Failed(reason) => {
                    eprintln!("rollout: {id}: {reason}")
                }
                Outcome::Paused(reason) => eprintln!(
                    "rollout: {id} paused: {reason}; `rollout resume {id}` or `rollout abort {id}`"
                ),
                Outcome::Succeeded => {}
            }
            ExitCode::from(outcome.exit_code())
        }
        Err(e) => fail(
            1,
            &format!("rollout {id} stopped: {e}; `rollout resume {id}` goes on from the last step"),
        ),
    }
}

/// `PLAN.json`: the spec as written and the plan, so `apply` needs nothing else.
pub fn plan_file(spec: &Spec, plan: &Plan) -> String {
    rollout::planfile::write(spec, plan)
}

/// The spec and the plan of a file `plan_file` wrote, or what is wrong with it.
pub fn read_plan_file(path: &Path) -> Result<(Spec, Plan), String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    rollout::planfile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Read and validate a spec; an unreadable file is a config error, an
/// invalid one lists every problem (EX_DATAERR).
pub fn load_spec(path: &Path) -> Result<Spec, ExitCode> {
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
