//! `rollout`: parse, build, run the command.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use rollout::cli::{
    ApplyArgs, Cli, Command, HistoryArgs, Output, PlanArgs, RolloutArg, ServeArgs, StatusArgs,
    ValidateArgs,
};
use rollout::engine::Engine;
use rollout::plan::Plan;
use rollout::spec::{Spec, SpecError};
use rollout::status;
use rollout::store::{RolloutId, Store};
use serde_json::json;

/// The plan is not executable as written.
const EXIT_NOT_EXECUTABLE: u8 = 2;
/// The spec is invalid (EX_DATAERR).
const EXIT_INVALID_SPEC: u8 = 65;

fn main() -> ExitCode {
    let cli = Cli::parse();
    daemon::logging::init(daemon::logging::LogFormat::Text, "ROLLOUT_LOG");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(1, &format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate(ValidateArgs { spec }) => match load_spec(&spec) {
            Ok(s) => {
                let cohorts: usize = s.parts.iter().map(|p| p.cohorts.len()).sum();
                println!(
                    "{}: valid ({} over {} cohorts, {} gates)",
                    spec.display(),
                    s.describe(),
                    cohorts,
                    s.gates.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Plan(PlanArgs { spec, out, output }) => {
            let s = match load_spec(&spec) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let controller = match cli.connect.controller() {
                Ok(c) => c,
                Err(e) => return fail(daemon::EXIT_CONFIG as u8, &e.to_string()),
            };
            let plan = match controller.plan(&s).await {
                Ok(p) => p,
                Err(e) => return fail(1, &format!("cannot plan: {e}")),
            };
            if let Some(path) = out
                && let Err(e) = std::fs::write(&path, plan_file(&s, &plan))
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
        Command::Apply(ApplyArgs { plan, spec, yes }) => {
            let database = match cli.connect.database() {
                Ok(d) => d,
                Err(e) => return fail(daemon::EXIT_CONFIG as u8, &e.to_string()),
            };
            let controller = match cli.connect.controller() {
                Ok(c) => c,
                Err(e) => return fail(daemon::EXIT_CONFIG as u8, &e.to_string()),
            };
            let (s, p) = match (plan, spec) {
                (Some(file), _) => match read_plan_file(&file) {
                    Ok(sp) => sp,
                    Err(e) => return fail(EXIT_INVALID_SPEC, &e),
                },
                (None, Some(file)) => {
                    let s = match load_spec(&file) {
                        Ok(s) => s,
                        Err(code) => return code,
                    };
                    match controller.plan(&s).await {
                        Ok(p) => (s, p),
                        Err(e) => return fail(1, &format!("cannot plan: {e}")),
                    }
                }
                (None, None) => return fail(daemon::EXIT_USAGE as u8, "give PLAN.json or -f SPEC"),
            };
            print!("{}", p.render_table());
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return fail(
                        daemon::EXIT_USAGE as u8,
                        "not a terminal: pass --yes to apply without confirmation",
                    );
                }
                eprint!("apply this plan? [y/N] ");
                let mut answer = String::new();
                if std::io::stdin().read_line(&mut answer).is_err()
                    || !matches!(answer.trim(), "y" | "Y" | "yes")
                {
                    return fail(1, "not applied");
                }
            }
            let store = match Store::connect(&database).await {
                Ok(st) => st,
                Err(e) => return fail(1, &format!("cannot open the store: {e}")),
            };
            let say = progress_line;
            let engine = Engine {
                controller: &controller,
                store: &store,
                progress: &say,
            };
            let id = match engine.start(&s, &p).await {
                Ok(id) => id,
                Err(e) => return fail(1, &format!("not started: {e}")),
            };
            say(&format!("rollout {id} started: {}", s.describe()));
            match engine.run(&id).await {
                Ok(outcome) => {
                    if let rollout::engine::Outcome::RolledBack(reason)
                    | rollout::engine::Outcome::Failed(reason) = &outcome
                    {
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
        Command::Status(StatusArgs {
            id,
            output,
            watch,
            interval,
        }) => {
            let store = match open_store(&cli.connect).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let id = match pick(&store, id).await {
                Ok(id) => id,
                Err(code) => return code,
            };
            let format = match output {
                Output::Table => status::Format::Table,
                Output::Json => status::Format::Json,
            };
            if watch {
                let mut print = |line: &str| println!("{line}");
                return match status::watch(&store, &id, format, interval, &mut print).await {
                    Ok(state) => ExitCode::from(status::exit_code(state)),
                    Err(e) => fail(1, &e.to_string()),
                };
            }
            match status::line(&store, &id, format).await {
                Ok((line, _)) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, &e.to_string()),
            }
        }
        Command::History(HistoryArgs { id }) => {
            let store = match open_store(&cli.connect).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            match id {
                None => match store.list().await {
                    Ok(all) => {
                        for r in all {
                            println!("{}  {} {}  {}", r.id, r.component, r.version, r.state);
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(1, &e.to_string()),
                },
                Some(id) => match store.history(&RolloutId(id)).await {
                    Ok(steps) => {
                        for s in steps {
                            println!(
                                "{:>4}  {}  {:<16} {:<14} {}",
                                s.seq,
                                s.at,
                                s.event.kind,
                                s.event.host.as_deref().unwrap_or("-"),
                                s.event.detail
                            );
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(1, &e.to_string()),
                },
            }
        }
        Command::Pause(RolloutArg { id }) => {
            let store = match open_store(&cli.connect).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let id = RolloutId(id);
            match store.get(&id).await {
                Ok(rec) if rec.summary.state == rollout::store::RolloutState::Running => {
                    match store
                        .set_state(&id, rollout::store::RolloutState::Paused)
                        .await
                    {
                        Ok(()) => {
                            println!("{id} paused; its apply stops at the next step");
                            ExitCode::SUCCESS
                        }
                        Err(e) => fail(1, &e.to_string()),
                    }
                }
                Ok(rec) => fail(
                    1,
                    &format!(
                        "{id} is {}; only a running rollout can be paused",
                        rec.summary.state
                    ),
                ),
                Err(e) => fail(1, &e.to_string()),
            }
        }
        Command::Resume(RolloutArg { id }) => {
            resume_or_abort(cli.connect, RolloutId(id), false).await
        }
        Command::Abort(RolloutArg { id }) => {
            resume_or_abort(cli.connect, RolloutId(id), true).await
        }
        Command::Serve(ServeArgs {
            listen,
            webhook_token_file,
            api_token_file,
            tls_cert,
            tls_key,
        }) => {
            let tls = tls_cert.zip(tls_key);
            serve(cli.connect, listen, webhook_token_file, api_token_file, tls).await
        }
    }
}

/// `rollout serve`: every setting is checked (exposure first, before
/// anything is read or bound), then the API serves until a signal.
async fn serve(
    connect: rollout::cli::Connect,
    listen: std::net::SocketAddr,
    webhook_token_file: Option<std::path::PathBuf>,
    api_token_file: Option<std::path::PathBuf>,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> ExitCode {
    use rollout::auth::BearerToken;
    let config = |e: &dyn std::fmt::Display| fail(daemon::EXIT_CONFIG as u8, &e.to_string());
    if let Err(e) = rollout::serve::check_exposure(listen, api_token_file.is_some(), tls.is_some())
    {
        return config(&e);
    }
    let webhook_token = match webhook_token_file.as_deref() {
        None => {
            tracing::warn!(
                "no --webhook-token-file: the Alertmanager webhook refuses every delivery"
            );
            None
        }
        Some(path) => match BearerToken::read("webhook", path) {
            Ok(token) => Some(token),
            Err(e) => return config(&e),
        },
    };
    let api_token = match api_token_file
        .as_deref()
        .map(|p| BearerToken::read("API", p))
    {
        None => None,
        Some(Ok(token)) => Some(token),
        Some(Err(e)) => return config(&e),
    };
    let tls = match tls.map(|(cert, key)| rollout::https::server_config(&cert, &key)) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => return config(&e),
    };
    let store = match open_store(&connect).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => return config(&format!("cannot listen on {listen}: {e}")),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        let signal = daemon::signal::shutdown().await;
        tracing::info!(signal, "stopping");
        stop.cancel();
    });
    // The bound address, so `--listen 127.0.0.1:0` can be found.
    let listen = listener.local_addr().unwrap_or(listen);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%listen, scheme, api_token = api_token.is_some(), "rollout controller API listening");
    let api = rollout::serve::Api {
        store,
        webhook_token,
        api_token,
    };
    match rollout::serve::serve(listener, tls, api, cancel).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &format!("serve failed: {e}")),
    }
}

/// `rollout resume ID` and `rollout abort ID`.
async fn resume_or_abort(connect: rollout::cli::Connect, id: RolloutId, abort: bool) -> ExitCode {
    let database = match connect.database() {
        Ok(d) => d,
        Err(e) => return fail(daemon::EXIT_CONFIG as u8, &e.to_string()),
    };
    let controller = match connect.controller() {
        Ok(c) => c,
        Err(e) => return fail(daemon::EXIT_CONFIG as u8, &e.to_string()),
    };
    let store = match Store::connect(&database).await {
        Ok(st) => st,
        Err(e) => return fail(1, &format!("cannot open the store: {e}")),
    };
    let engine = Engine {
        controller: &controller,
        store: &store,
        progress: &progress_line,
    };
    let result = if abort {
        engine.abort(&id, "by a person").await
    } else {
        progress_line(&format!("resuming {id}"));
        engine.run(&id).await
    };
    finish(&id, result)
}

/// One progress line per event, with a timestamp (epoch seconds).
fn progress_line(line: &str) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    println!("[{t:.1}] {line}");
}

/// The exit code and the closing message of a run.
fn finish(
    id: &RolloutId,
    result: Result<rollout::engine::Outcome, rollout::engine::EngineError>,
) -> ExitCode {
    use rollout::engine::Outcome;
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

async fn open_store(connect: &rollout::cli::Connect) -> Result<Store, ExitCode> {
    let url = connect
        .database()
        .map_err(|e| fail(daemon::EXIT_CONFIG as u8, &e.to_string()))?;
    Store::connect(&url)
        .await
        .map_err(|e| fail(1, &format!("cannot open the store: {e}")))
}

async fn pick(store: &Store, id: Option<String>) -> Result<RolloutId, ExitCode> {
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

/// `PLAN.json`: the spec as written and the plan, so `apply` needs nothing else.
fn plan_file(spec: &Spec, plan: &Plan) -> String {
    let spec: serde_json::Value = serde_json::from_str(&spec.to_json()).unwrap_or_default();
    let plan: serde_json::Value = serde_json::from_str(&plan.to_json()).unwrap_or_default();
    serde_json::to_string_pretty(&json!({"spec": spec, "plan": plan})).unwrap_or_default()
}

fn read_plan_file(path: &Path) -> Result<(Spec, Plan), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a plan file: {e}", path.display()))?;
    let spec = Spec::from_json(&v["spec"].to_string())
        .map_err(|e| format!("{}: spec: {e}", path.display()))?;
    let plan = Plan::from_json(&v["plan"].to_string())
        .map_err(|e| format!("{}: plan: {e}", path.display()))?;
    Ok((spec, plan))
}

fn load_spec(path: &Path) -> Result<Spec, ExitCode> {
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
