//! Gate evaluation, kept apart from fetching (as Argo Rollouts does): a
//! measurement becomes an [`Outcome`], and an [`Analysis`] folds outcomes
//! into a [`Phase`] with the gate's limits. Pure: no clock, no I/O.

use serde::{Deserialize, Serialize};

use crate::spec::{Condition, Gate, NoDataPolicy};

/// What one query returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Measurement {
    /// A number.
    Value(f64),
    /// An empty result.
    NoData,
    /// The query failed (HTTP error, bad PromQL, timeout).
    QueryError(String),
}

/// The outcome of one measurement, as Argo Rollouts defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The value holds the condition.
    Successful,
    /// The value breaks the condition.
    Failed,
    /// Neither: no data under the `inconclusive` policy.
    Inconclusive,
    /// The measurement could not be taken.
    Error,
}

/// Turns a measurement into an outcome: the value against the condition, no
/// data by the gate's policy, a query error as `Error`.
pub fn assess(condition: &Condition, no_data: NoDataPolicy, m: &Measurement) -> Outcome {
    match m {
        Measurement::Value(v) if condition.holds(*v) => Outcome::Successful,
        Measurement::Value(_) => Outcome::Failed,
        Measurement::NoData => match no_data {
            NoDataPolicy::Pass => Outcome::Successful,
            NoDataPolicy::Fail => Outcome::Failed,
            NoDataPolicy::Inconclusive => Outcome::Inconclusive,
        },
        Measurement::QueryError(_) => Outcome::Error,
    }
}

/// Where a gate's analysis stands. Ordered from best to worst, so the worst
/// of several gates is their [`Ord::max`] (see [`combine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Passed: the rollout may go on.
    Succeeded,
    /// Still measuring.
    Running,
    /// Needs a person: the rollout pauses.
    Inconclusive,
    /// Too many consecutive errors; treated like `Inconclusive` (pause).
    Error,
    /// Failed: the rollout rolls back.
    Failed,
}

impl Phase {
    /// Whether no more measurements change it.
    pub fn is_final(self) -> bool {
        self != Phase::Running
    }

    /// Whether the rollout should pause for a person.
    pub fn pauses(self) -> bool {
        matches!(self, Phase::Inconclusive | Phase::Error)
    }
}

/// The worst phase of several gates; `Succeeded` when there is none.
pub fn combine(phases: impl IntoIterator<Item = Phase>) -> Phase {
    phases.into_iter().max().unwrap_or(Phase::Succeeded)
}

/// The limits an analysis applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Measurements after which the gate succeeds; `None`: until [`Analysis::finish`].
    pub count: Option<u32>,
    /// Failed measurements tolerated.
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated (Argo's `inconclusiveLimit`; the
    /// spec has no field for it, so 0).
    pub inconclusive_limit: u32,
    /// Consecutive errors tolerated.
    pub consecutive_error_limit: u32,
}

impl Limits {
    /// The limits of a gate from the spec.
    pub fn of(gate: &Gate) -> Limits {
        Limits {
            count: gate.effective_count(),
            failure_limit: gate.failure_limit,
            inconclusive_limit: 0,
            consecutive_error_limit: gate.consecutive_error_limit,
        }
    }
}

/// Counts of outcomes so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// All measurements.
    pub count: u32,
    /// Successful ones.
    pub successful: u32,
    /// Failed ones.
    pub failed: u32,
    /// Inconclusive ones.
    pub inconclusive: u32,
    /// Errors.
    pub error: u32,
    /// Errors since the last non-error measurement.
    pub consecutive_error: u32,
}

/// The running analysis of one gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Analysis {
    limits: Limits,
    tally: Tally,
    phase: Phase,
}

impl Analysis {
    /// A new analysis, `Running`.
    pub fn new(limits: Limits) -> Analysis {
        Analysis {
            limits,
            tally: Tally::default(),
            phase: Phase::Running,
        }
    }

    /// Counts an outcome and returns the phase. Once final, the phase stays.
    pub fn record(&mut self, outcome: Outcome) -> Phase {
        if self.phase.is_final() {
            return self.phase;
        }
        let t = &mut self.tally;
        t.count += 1;
        match outcome {
            Outcome::Successful => t.successful += 1,
            Outcome::Failed => t.failed += 1,
            Outcome::Inconclusive => t.inconclusive += 1,
            Outcome::Error => t.error += 1,
        }
        if outcome == Outcome::Error {
            t.consecutive_error += 1;
        } else {
            t.consecutive_error = 0;
        }
        self.phase = self.assess(false);
        self.phase
    }

    /// Ends the analysis (the bake is over): a gate still running succeeds
    /// unless a limit says otherwise.
    pub fn finish(&mut self) -> Phase {
        if !self.phase.is_final() {
            self.phase = self.assess(true);
        }
        self.phase
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The counts so far.
    pub fn tally(&self) -> Tally {
        self.tally
    }

    /// Argo's order: failures, then inconclusive, then consecutive errors,
    /// then the count.
    fn assess(&self, terminating: bool) -> Phase {
        let (l, t) = (&self.limits, &self.tally);
        if t.failed > l.failure_limit {
            Phase::Failed
        } else if t.inconclusive > l.inconclusive_limit {
            Phase::Inconclusive
        } else if t.consecutive_error > l.consecutive_error_limit {
            Phase::Error
        } else if l.count.is_some_and(|c| t.count >= c) || terminating {
            Phase::Succeeded
        } else {
            Phase::Running
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::CompareOp;

    use Outcome::{Error as E, Failed as F, Inconclusive as I, Successful as S};

    #[test]
    fn assess_table() {
        let lt = Condition {
            op: CompareOp::Lt,
            threshold: 0.01,
        };
        let cases = [
            (Measurement::Value(0.001), NoDataPolicy::Fail, S),
            (Measurement::Value(0.5), NoDataPolicy::Pass, F),
            (Measurement::Value(f64::NAN), NoDataPolicy::Pass, F),
            (Measurement::NoData, NoDataPolicy::Pass, S),
            (Measurement::NoData, NoDataPolicy::Fail, F),
            (Measurement::NoData, NoDataPolicy::Inconclusive, I),
            (Measurement::QueryError("502".into()), NoDataPolicy::Pass, E),
        ];
        for (m, policy, want) in cases {
            assert_eq!(assess(&lt, policy, &m), want, "{m:?} {policy:?}");
        }
    }

    fn limits(count: Option<u32>, failure_limit: u32, consecutive_error_limit: u32) -> Limits {
        Limits {
            count,
            failure_limit,
            inconclusive_limit: 0,
            consecutive_error_limit,
        }
    }

    #[test]
    fn analysis_table() {
        // (limits, outcomes, phase after each outcome)
        let cases: &[(Limits, &[Outcome], &[Phase])] = {
            use Phase::{
                Error as PE, Failed as PF, Inconclusive as PI, Running as R, Succeeded as OK,
            };
            &[
                (limits(Some(3), 0, 4), &[S, S, S], &[R, R, OK]),
                (limits(Some(3), 0, 4), &[S, F], &[R, PF]),
                (limits(Some(3), 1, 4), &[F, S, S], &[R, R, OK]),
                (limits(Some(5), 1, 4), &[F, S, F], &[R, R, PF]),
                (limits(Some(3), 0, 4), &[I], &[PI]),
                (limits(Some(9), 0, 2), &[E, E, E], &[R, R, PE]),
                // A success resets the consecutive errors.
                (
                    limits(Some(9), 0, 2),
                    &[E, E, S, E, E, S],
                    &[R, R, R, R, R, R],
                ),
                // Errors count towards the count, as in Argo.
                (limits(Some(3), 0, 4), &[E, S, E], &[R, R, OK]),
                // Final phases stay.
                (limits(Some(2), 0, 0), &[F, S, S], &[PF, PF, PF]),
                (limits(Some(1), 0, 0), &[S, F], &[OK, OK]),
                // Failure is checked first: worst wins.
                (limits(Some(1), 0, 0), &[F], &[PF]),
                // No count: runs until finished.
                (limits(None, 0, 4), &[S, S, S, S], &[R, R, R, R]),
            ]
        };
        for (i, (l, outcomes, phases)) in cases.iter().enumerate() {
            let mut a = Analysis::new(*l);
            let got: Vec<Phase> = outcomes.iter().map(|o| a.record(*o)).collect();
            assert_eq!(got, *phases, "case {i}: {outcomes:?}");
        }
    }

    #[test]
    fn finish_table() {
        let cases: &[(Limits, &[Outcome], Phase)] = &[
            (limits(None, 0, 4), &[S, S], Phase::Succeeded),
            (limits(None, 0, 4), &[], Phase::Succeeded),
            (limits(None, 1, 4), &[F], Phase::Succeeded),
            (limits(None, 0, 4), &[F], Phase::Failed),
            (limits(Some(10), 0, 4), &[S, E], Phase::Succeeded),
            (limits(None, 0, 1), &[E, E], Phase::Error),
        ];
        for (i, (l, outcomes, want)) in cases.iter().enumerate() {
            let mut a = Analysis::new(*l);
            for o in *outcomes {
                a.record(*o);
            }
            assert_eq!(a.finish(), *want, "case {i}");
            assert_eq!(a.tally().count as usize, outcomes.len());
        }
    }

    #[test]
    fn worst_phase_wins() {
        use Phase::*;
        let cases: &[(&[Phase], Phase)] = &[
            (&[], Succeeded),
            (&[Succeeded, Succeeded], Succeeded),
            (&[Succeeded, Running], Running),
            (&[Running, Inconclusive], Inconclusive),
            (&[Inconclusive, Error, Running], Error),
            (&[Error, Failed, Succeeded], Failed),
        ];
        for (phases, want) in cases {
            assert_eq!(combine(phases.iter().copied()), *want, "{phases:?}");
        }
        assert!(Inconclusive.pauses() && Error.pauses() && !Failed.pauses());
    }

    #[test]
    fn limits_from_spec() {
        let spec =
            crate::spec::Spec::from_yaml(include_str!("../../examples/rollout.yaml")).unwrap();
        let l = Limits::of(&spec.gates[0]);
        assert_eq!(l, limits(Some(5), 1, 2));
        // 5m every 30s
        assert_eq!(Limits::of(&spec.gates[1]).count, Some(10));
    }
}
