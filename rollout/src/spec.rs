//! The rollout spec: a YAML file read with `deny_unknown_fields`, then checked
//! once by [`SpecFile::validate`] into a [`Spec`] whose values cannot be wrong
//! afterwards. Validation reports every problem at once, each with the path
//! of the field (`cohorts[1].batch: ...`).
//!
//! Every field is documented in `docs/rollout-spec.md`.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use daemon::config_check::{Field, Shape, anything};

/// Default bake time of a cohort.
pub const DEFAULT_BAKE: Duration = Duration::from_secs(5 * 60);
/// Default interval between two measurements of a gate.
pub const DEFAULT_GATE_INTERVAL: Duration = Duration::from_secs(60);
/// Default `consecutive_error_limit` of a gate (as in Argo Rollouts).
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: u32 = 4;
/// Default timeout of one Salt job on one batch.
pub const DEFAULT_SALT_JOB_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Default time a batch's hosts have to report the new version.
pub const DEFAULT_VERSION_CONFIRM_TIMEOUT: Duration = Duration::from_secs(2 * 60);

// ---------------------------------------------------------------------------
// The file as written
// ---------------------------------------------------------------------------

/// The spec file as written. Unknown keys are an error, so a typo is not
/// ignored. Call [`SpecFile::validate`] to get a [`Spec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// `edge` or `connector` (the single-component form; exclusive with
    /// `components`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The version to roll out, as reported by `*_build_info{version}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where the release comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactFile>,
    /// Several components rolled out in order (edge before connector), each
    /// with its own version, artifact and cohorts. Exclusive with
    /// `component`, `version`, `artifact` and `cohorts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentFile>,
    /// Cohorts in rollout order (the single-component form).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cohorts: Vec<CohortFile>,
    /// Gates evaluated while each batch bakes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateFile>,
    /// Alerts that roll back at once.
    #[serde(default)]
    pub rollback: RollbackFile,
    /// Failure limits.
    #[serde(default)]
    pub limits: LimitsFile,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsFile,
}

/// One entry of `components:` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentFile {
    /// `edge` or `connector`.
    pub component: String,
    /// The version of this component to roll out.
    pub version: String,
    /// Where this component's release comes from.
    pub artifact: ArtifactFile,
    /// This component's cohorts in rollout order.
    #[serde(default)]
    pub cohorts: Vec<CohortFile>,
}

/// `artifact:` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactFile {
    /// `salt://...`, `http://...` or `https://...`.
    pub url: String,
    /// SHA-256 of the artifact, 64 hex digits.
    pub sha256: String,
}

/// A batch size as written: a number (`2`) or a text (`"2"`, `"50%"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchFile {
    /// `batch: 2`
    Number(i64),
    /// `batch: 50%` or `batch: "2"`
    Text(String),
}

/// One entry of `cohorts:` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortFile {
    /// Name, unique in the spec.
    pub name: String,
    /// Salt compound target, e.g. `G@cohort:canary and G@role:edge`.
    pub target: String,
    /// Hosts per batch: a count or a percentage of the cohort. Default `100%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchFile>,
    /// How long each batch bakes under the gates. Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<String>,
}

/// `grafana:` of a gate as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrafanaPanelFile {
    /// Dashboard UID.
    pub dashboard: String,
    /// Panel title.
    pub panel: String,
}

/// One entry of `gates:` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateFile {
    /// Name, unique in the spec.
    pub name: String,
    /// PromQL returning one number. Exclusive with `grafana`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Condition a value must hold, e.g. `< 0.01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// A Grafana panel whose query (and thresholds) to use. Exclusive with `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana: Option<GrafanaPanelFile>,
    /// Time between measurements. Default `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Number of measurements. Exclusive with `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    /// How long to measure. Exclusive with `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Failed measurements tolerated. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<i64>,
    /// Consecutive query errors tolerated. Default 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_error_limit: Option<i64>,
    /// `fail`, `pass` or `inconclusive`. Default `inconclusive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data: Option<String>,
}

/// `rollback:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackFile {
    /// Alert selectors such as `{alertname="EdgeReleaseErrorRatioHigh", component="edge"}`.
    #[serde(default)]
    pub alerts: Vec<String>,
}

/// `limits:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Hosts that may fail their Salt state before the rollout rolls back. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_hosts: Option<i64>,
}

/// `timeouts:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    /// Longest wait for one Salt job. Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt_job: Option<String>,
    /// Longest wait for a batch to report the new version. Default `2m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_confirm: Option<String>,
    /// How long a paused rollout waits for a person before rolling back.
    /// Default: forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

/// A value serde checks by itself.
const LEAF: Shape = Shape::Value(anything);

/// The keys of a spec file, for reporting unknown ones all at once (the
/// structs above still deny them; the tests keep both in step).
const ARTIFACT_SHAPE: Shape = Shape::Map(&[
    Field::optional("url", LEAF),
    Field::optional("sha256", LEAF),
]);

const COHORTS_SHAPE: Shape = Shape::List(&Shape::Map(&[
    Field::optional("name", LEAF),
    Field::optional("target", LEAF),
    Field::optional("batch", LEAF),
    Field::optional("bake", LEAF),
]));

static SPEC_SHAPE: Shape = Shape::Map(&[
    Field::optional("component", LEAF),
    Field::optional("version", LEAF),
    Field::optional("artifact", ARTIFACT_SHAPE),
    Field::optional(
        "components",
        Shape::List(&Shape::Map(&[
            Field::optional("component", LEAF),
            Field::optional("version", LEAF),
            Field::optional("artifact", ARTIFACT_SHAPE),
            Field::optional("cohorts", COHORTS_SHAPE),
        ])),
    ),
    Field::optional("cohorts", COHORTS_SHAPE),
    Field::optional(
        "gates",
        Shape::List(&Shape::Map(&[
            Field::optional("name", LEAF),
            Field::optional("query", LEAF),
            Field::optional("condition", LEAF),
            Field::optional(
                "grafana",
                Shape::Map(&[
                    Field::optional("dashboard", LEAF),
                    Field::optional("panel", LEAF),
                ]),
            ),
            Field::optional("interval", LEAF),
            Field::optional("count", LEAF),
            Field::optional("duration", LEAF),
            Field::optional("failure_limit", LEAF),
            Field::optional("consecutive_error_limit", LEAF),
            Field::optional("no_data", LEAF),
        ])),
    ),
    Field::optional("rollback", Shape::Map(&[Field::optional("alerts", LEAF)])),
    Field::optional(
        "limits",
        Shape::Map(&[Field::optional("max_failed_hosts", LEAF)]),
    ),
    Field::optional(
        "timeouts",
        Shape::Map(&[
            Field::optional("salt_job", LEAF),
            Field::optional("version_confirm", LEAF),
            Field::optional("resume", LEAF),
        ]),
    ),
]);

/// serde's error for a value of the wrong type, as a problem at the path
/// serde_yaml puts before its message (`cohorts[0].bake: invalid type...`).
fn shape_problem(e: &serde_yaml::Error) -> Problem {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((path, message))
            if !path.contains(' ') && path.chars().next().is_some_and(char::is_alphabetic) =>
        {
            Problem::new(path, message)
        }
        _ => Problem::new("(spec)", text),
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One problem of a spec: the path of the field (like `cohorts[1].batch`)
/// and what is wrong.
pub use daemon::config_check::Problem;

/// Why a spec was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The text is not YAML of the spec's shape (an unknown key, a wrong type).
    #[error("spec is not valid YAML of the expected shape: {0}")]
    Parse(String),
    /// The spec parsed, but some values are wrong; every problem is listed.
    #[error("spec has {} problem(s):\n{}", .0.len(), list(.0))]
    Invalid(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// Typed values
// ---------------------------------------------------------------------------

/// Which program a rollout updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    /// The public-facing edge.
    Edge,
    /// The connector next to an origin.
    Connector,
}

impl Component {
    /// `edge` or `connector`.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Edge => "edge",
            Component::Connector => "connector",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Component {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "edge" => Ok(Component::Edge),
            "connector" => Ok(Component::Connector),
            other => Err(format!("`{other}` is not `edge` or `connector`")),
        }
    }
}

/// The release to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Artifact {
    /// `salt://`, `http://` or `https://` URL.
    pub url: String,
    /// SHA-256, 64 lowercase hex digits.
    pub sha256: String,
}

/// Hosts per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchSize {
    /// This many hosts (at least 1).
    Count(u32),
    /// This percentage (1 to 100) of the cohort's eligible hosts, rounded up.
    Percent(u8),
}

impl BatchSize {
    /// Hosts per batch for a cohort of `eligible` hosts: at least 1, at most
    /// `eligible` (when there is any), percentages rounded up.
    pub fn hosts_per_batch(self, eligible: usize) -> usize {
        let n = match self {
            BatchSize::Count(n) => n as usize,
            BatchSize::Percent(p) => (eligible * p as usize).div_ceil(100),
        };
        n.clamp(1, eligible.max(1))
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Count(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// One cohort: a set of hosts updated together, batch by batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cohort {
    /// Name, unique in the spec.
    pub name: String,
    /// Salt compound target.
    pub target: String,
    /// Hosts per batch.
    pub batch: BatchSize,
    /// Bake time of each batch.
    #[serde(with = "daemon::duration::serde_text")]
    pub bake: Duration,
}

/// A comparison operator of a [`Condition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CompareOp {
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `==`
    #[serde(rename = "==")]
    Eq,
    /// `!=`
    #[serde(rename = "!=")]
    Ne,
}

impl CompareOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
        }
    }
}

/// What a measured value must satisfy, like `< 0.01`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Condition {
    /// The comparison.
    pub op: CompareOp,
    /// The right-hand side (finite).
    pub threshold: f64,
}

impl Condition {
    /// Parses `< 0.01`, `<=5`, `>= 0.99`, `== 1`, `!= 0`.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let t = text.trim();
        // Two-character operators first.
        let ops = [
            ("<=", CompareOp::Le),
            (">=", CompareOp::Ge),
            ("==", CompareOp::Eq),
            ("!=", CompareOp::Ne),
            ("<", CompareOp::Lt),
            (">", CompareOp::Gt),
        ];
        let Some((op, rest)) = ops
            .iter()
            .find_map(|(s, op)| t.strip_prefix(s).map(|rest| (*op, rest)))
        else {
            return Err(format!(
                "`{t}` must start with one of <, <=, >, >=, ==, != (like `< 0.01`)"
            ));
        };
        let number = rest.trim();
        let threshold: f64 = number
            .parse()
            .map_err(|_| format!("`{number}` in `{t}` is not a number"))?;
        if !threshold.is_finite() {
            return Err(format!("`{number}` in `{t}` must be a finite number"));
        }
        Ok(Condition { op, threshold })
    }

    /// Whether `value` satisfies the condition. NaN never does.
    pub fn holds(&self, value: f64) -> bool {
        if value.is_nan() {
            return false;
        }
        match self.op {
            CompareOp::Lt => value < self.threshold,
            CompareOp::Le => value <= self.threshold,
            CompareOp::Gt => value > self.threshold,
            CompareOp::Ge => value >= self.threshold,
            CompareOp::Eq => value == self.threshold,
            CompareOp::Ne => value != self.threshold,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.as_str(), self.threshold)
    }
}

/// What a gate does when its query returns no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoDataPolicy {
    /// No data counts as a failed measurement.
    Fail,
    /// No data counts as a successful measurement.
    Pass,
    /// No data is inconclusive: the rollout pauses for a person.
    Inconclusive,
}

impl std::str::FromStr for NoDataPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fail" => Ok(NoDataPolicy::Fail),
            "pass" => Ok(NoDataPolicy::Pass),
            "inconclusive" => Ok(NoDataPolicy::Inconclusive),
            other => Err(format!(
                "`{other}` is not one of `fail`, `pass`, `inconclusive`"
            )),
        }
    }
}

/// Where a gate's value comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GateSource {
    /// A PromQL query and the condition its value must hold.
    Query {
        /// PromQL.
        query: String,
        /// Condition.
        condition: Condition,
    },
    /// A Grafana panel: its query, and its thresholds unless `condition` is set.
    Grafana {
        /// Dashboard UID.
        dashboard: String,
        /// Panel title.
        panel: String,
        /// Condition overriding the panel's thresholds.
        condition: Option<Condition>,
    },
}

/// How long a gate measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GateLength {
    /// This many measurements.
    Count(u32),
    /// For this long (`duration / interval` measurements, at least 1).
    #[serde(with = "daemon::duration::serde_text")]
    Duration(Duration),
    /// Until the batch's bake time ends.
    UntilBakeEnds,
}

/// A checked gate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    /// Name, unique in the spec.
    pub name: String,
    /// Where the value comes from.
    pub source: GateSource,
    /// Time between measurements.
    #[serde(with = "daemon::duration::serde_text")]
    pub interval: Duration,
    /// How long it measures.
    pub length: GateLength,
    /// Failed measurements tolerated; one more fails the gate.
    pub failure_limit: u32,
    /// Consecutive errors tolerated; one more makes the gate `Error`.
    pub consecutive_error_limit: u32,
    /// What no data means.
    pub no_data: NoDataPolicy,
}

impl Gate {
    /// Measurements after which the gate succeeds, if it is counted; `None`
    /// when it runs until the bake ends.
    pub fn effective_count(&self) -> Option<u32> {
        match self.length {
            GateLength::Count(n) => Some(n),
            GateLength::Duration(d) => {
                let n = d.as_millis() / self.interval.as_millis().max(1);
                Some(u32::try_from(n).unwrap_or(u32::MAX).max(1))
            }
            GateLength::UntilBakeEnds => None,
        }
    }
}

/// How an alert label is compared, as in Prometheus selectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MatchOp {
    /// `=`
    #[serde(rename = "=")]
    Equal,
    /// `!=`
    #[serde(rename = "!=")]
    NotEqual,
    /// `=~` (anchored regex)
    #[serde(rename = "=~")]
    Regex,
    /// `!~` (anchored regex)
    #[serde(rename = "!~")]
    NotRegex,
}

/// One label matcher like `component="edge"`.
#[derive(Debug, Clone, Serialize)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Comparison.
    pub op: MatchOp,
    /// Value or regex.
    pub value: String,
    #[serde(skip)]
    regex: Option<regex::Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Matcher {
    /// Builds a matcher; regexes are anchored like Prometheus's.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, String> {
        if !is_label_name(name) {
            return Err(format!("`{name}` is not a label name"));
        }
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("`{value}` is not a regex: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// Whether a label value (absent = empty, as in Prometheus) matches.
    pub fn matches(&self, label: Option<&str>) -> bool {
        let v = label.unwrap_or("");
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(r)) => r.is_match(v),
            (MatchOp::NotRegex, Some(r)) => !r.is_match(v),
            _ => false,
        }
    }
}

/// A set of matchers that must all match: `{alertname="X", component="edge"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertSelector {
    /// The matchers, in written order.
    pub matchers: Vec<Matcher>,
}

impl AlertSelector {
    /// Parses `{name="value", name!="v", name=~"re", name!~"re"}` (braces optional).
    pub fn parse(text: &str) -> Result<AlertSelector, String> {
        let t = text.trim();
        let inner = match (t.strip_prefix('{'), t.ends_with('}')) {
            (Some(rest), true) => &rest[..rest.len() - 1],
            (None, false) => t,
            _ => return Err(format!("`{t}` has unbalanced braces")),
        };
        let mut matchers = Vec::new();
        let mut rest = inner.trim();
        while !rest.is_empty() {
            let name_end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..name_end];
            rest = rest[name_end..].trim_start();
            let (op, after) = if let Some(r) = rest.strip_prefix("=~") {
                (MatchOp::Regex, r)
            } else if let Some(r) = rest.strip_prefix("!~") {
                (MatchOp::NotRegex, r)
            } else if let Some(r) = rest.strip_prefix("!=") {
                (MatchOp::NotEqual, r)
            } else if let Some(r) = rest.strip_prefix('=') {
                (MatchOp::Equal, r)
            } else {
                return Err(format!("expected =, !=, =~ or !~ after `{name}` in `{t}`"));
            };
            let after = after.trim_start();
            let Some(body) = after.strip_prefix('"') else {
                return Err(format!("the value of `{name}` must be in double quotes"));
            };
            let (value, consumed) = read_quoted(body)
                .ok_or_else(|| format!("the value of `{name}` has no closing quote"))?;
            matchers.push(Matcher::new(name, op, &value)?);
            rest = body[consumed..].trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r.trim_start();
            } else if !rest.is_empty() {
                return Err(format!("expected `,` between matchers in `{t}`"));
            }
        }
        if matchers.is_empty() {
            return Err("must have at least one matcher".into());
        }
        Ok(AlertSelector { matchers })
    }

    /// Whether an alert with these labels matches every matcher.
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches(labels.get(&m.name).map(String::as_str)))
    }
}

/// Reads a double-quoted string body (after the opening quote) with `\"` and
/// `\\` escapes; returns the value and the bytes consumed, closing quote included.
fn read_quoted(body: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, i + 1)),
            '\\' => match chars.next()? {
                (_, 'n') => out.push('\n'),
                (_, other) => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Failure limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Hosts that may fail their Salt state in the whole rollout before it rolls back.
    pub max_failed_hosts: u32,
}

/// Timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// Longest wait for one Salt job.
    #[serde(with = "daemon::duration::serde_text")]
    pub salt_job: Duration,
    /// Longest wait for a batch to report the new version.
    #[serde(with = "daemon::duration::serde_text")]
    pub version_confirm: Duration,
    /// How long a paused rollout waits for a person before rolling back; `None`: forever.
    #[serde(with = "daemon::duration::serde_text_opt")]
    pub resume: Option<Duration>,
}

/// One component of a rollout: its release and its cohorts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    /// Which program.
    pub component: Component,
    /// Target version.
    pub version: String,
    /// Release artifact.
    pub artifact: Artifact,
    /// Cohorts in order (at least one).
    pub cohorts: Vec<Cohort>,
}

/// A checked spec. Build it with [`Spec::from_yaml`] or [`SpecFile::validate`].
///
/// `component`, `version`, `artifact` and `cohorts` are those of the first
/// (or only) component; [`Spec::parts`] lists every component in rollout
/// order (edge before connector).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spec {
    /// Which program (the first component's).
    pub component: Component,
    /// Target version (the first component's).
    pub version: String,
    /// Release artifact (the first component's).
    pub artifact: Artifact,
    /// Cohorts in order (the first component's).
    pub cohorts: Vec<Cohort>,
    /// Every component in rollout order; one entry for a single-component spec.
    pub parts: Vec<Part>,
    /// Gates.
    pub gates: Vec<Gate>,
    /// Alert selectors that roll back at once.
    pub rollback_alerts: Vec<AlertSelector>,
    /// Limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// The file this was checked from (stored, and re-validated on load).
    #[serde(skip)]
    pub source: SpecFile,
}

impl Spec {
    /// Parses and validates a YAML spec. Unknown keys are reported together
    /// with every other problem (each with its path and, for a typo, the
    /// key meant), not one at a time.
    pub fn from_yaml(text: &str) -> Result<Spec, SpecError> {
        let mut value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        let unknown = daemon::config_check::strip(&SPEC_SHAPE, &mut value);
        if unknown.is_empty() {
            let file: SpecFile =
                serde_yaml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
            return file.validate().map_err(SpecError::Invalid);
        }
        // Read the rest as YAML text again, so scalars are taken as the
        // file wrote them (an unquoted `version: 2` is the text "2").
        let rest = serde_yaml::to_string(&value).unwrap_or_default();
        let mut problems = unknown;
        match serde_yaml::from_str::<SpecFile>(&rest) {
            Ok(file) => problems.extend(file.validate().err().unwrap_or_default()),
            Err(e) => problems.push(shape_problem(&e)),
        }
        Err(SpecError::Invalid(problems))
    }

    /// Parses and validates a spec stored as JSON (the [`SpecFile`] form, see
    /// [`Spec::to_json`]).
    pub fn from_json(text: &str) -> Result<Spec, SpecError> {
        let file: SpecFile =
            serde_json::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        file.validate().map_err(SpecError::Invalid)
    }

    /// The spec as written, as JSON, for the store.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.source).expect("a spec file always serializes")
    }

    /// The components in rollout order.
    pub fn components(&self) -> Vec<Component> {
        self.parts.iter().map(|p| p.component).collect()
    }

    /// The part of a component, if the spec rolls it out.
    pub fn part(&self, component: Component) -> Option<&Part> {
        self.parts.iter().find(|p| p.component == component)
    }

    /// `edge v2` or `edge v2 then connector v2`, for messages.
    pub fn describe(&self) -> String {
        self.parts
            .iter()
            .map(|p| format!("{} {}", p.component, p.version))
            .collect::<Vec<_>>()
            .join(" then ")
    }

    /// The alert selector that matches these labels, if any.
    pub fn rollback_alert_matching(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Option<&AlertSelector> {
        self.rollback_alerts.iter().find(|s| s.matches(labels))
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(path, message));
    }

    fn duration(&mut self, path: &str, text: Option<&str>, default: Duration) -> Duration {
        match text {
            None => default,
            Some(t) => match daemon::duration::parse(t) {
                Ok(d) => d,
                Err(e) => {
                    self.add(path, e);
                    default
                }
            },
        }
    }

    fn non_negative(&mut self, path: &str, v: Option<i64>, default: u32) -> u32 {
        match v {
            None => default,
            Some(n) => match u32::try_from(n) {
                Ok(n) => n,
                Err(_) => {
                    self.add(path, format!("{n} must be 0 or more"));
                    default
                }
            },
        }
    }

    fn non_empty(&mut self, path: &str, v: &str) -> bool {
        if v.trim().is_empty() {
            self.add(path, "must not be empty");
            false
        } else {
            true
        }
    }
}

impl SpecFile {
    /// Checks every field and returns the typed spec, or every problem found,
    /// each naming the path of its field.
    pub fn validate(&self) -> Result<Spec, Vec<Problem>> {
        let mut p = Problems::default();

        let parts = if self.components.is_empty() {
            let component = self.component.clone().unwrap_or_else(|| {
                p.add(
                    "component",
                    "is required: `edge` or `connector` (or list several under `components:`)",
                );
                "edge".into()
            });
            let version = self.version.clone().unwrap_or_else(|| {
                p.add("version", "is required: the version to roll out, like `v2`");
                "-".into()
            });
            let artifact = self.artifact.clone().unwrap_or_else(|| {
                p.add(
                    "artifact",
                    "is required: `url:` and `sha256:` of the release",
                );
                ArtifactFile {
                    url: "salt://-".into(),
                    sha256: "0".repeat(64),
                }
            });
            vec![validate_part(
                &mut p,
                "",
                &component,
                &version,
                &artifact,
                &self.cohorts,
            )]
        } else {
            for (key, set) in [
                ("component", self.component.is_some()),
                ("version", self.version.is_some()),
                ("artifact", self.artifact.is_some()),
                ("cohorts", !self.cohorts.is_empty()),
            ] {
                if set {
                    p.add(
                        key,
                        format!(
                            "set `components:` or the single `component:`, `version:`, `artifact:` and `cohorts:`, not both; with `components:` each entry has its own `{key}`"
                        ),
                    );
                }
            }
            let mut parts: Vec<Part> = Vec::with_capacity(self.components.len());
            for (i, c) in self.components.iter().enumerate() {
                let prefix = format!("components[{i}].");
                let part = validate_part(
                    &mut p,
                    &prefix,
                    &c.component,
                    &c.version,
                    &c.artifact,
                    &c.cohorts,
                );
                if c.component.parse::<Component>().is_ok() {
                    if let Some(j) = parts.iter().position(|q| q.component == part.component) {
                        p.add(
                            format!("{prefix}component"),
                            format!(
                                "`{}` is already listed at components[{j}]; list each component once",
                                part.component
                            ),
                        );
                    } else if part.component == Component::Edge
                        && let Some(j) = parts
                            .iter()
                            .position(|q| q.component == Component::Connector)
                    {
                        p.add(
                            format!("components[{j}].component"),
                            format!(
                                "connector must come after edge (components[{i}]): a new connector may use what only a new edge speaks; list edge first"
                            ),
                        );
                    }
                }
                parts.push(part);
            }
            parts
        };

        let mut gates = Vec::new();
        let mut gate_names = BTreeSet::new();
        for (i, g) in self.gates.iter().enumerate() {
            let at = |f: &str| format!("gates[{i}].{f}");
            if p.non_empty(&at("name"), &g.name) && !gate_names.insert(g.name.as_str()) {
                p.add(
                    at("name"),
                    format!("`{}` is already the name of another gate", g.name),
                );
            }
            let condition = g
                .condition
                .as_deref()
                .and_then(|c| match Condition::parse(c) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        p.add(at("condition"), e);
                        None
                    }
                });
            let fallback = Condition {
                op: CompareOp::Lt,
                threshold: 0.0,
            };
            let source = match (&g.query, &g.grafana) {
                (Some(_), Some(_)) => {
                    p.add(format!("gates[{i}]"), "set `query` or `grafana`, not both");
                    None
                }
                (None, None) => {
                    p.add(format!("gates[{i}]"), "needs `query` or `grafana`");
                    None
                }
                (Some(q), None) => {
                    p.non_empty(&at("query"), q);
                    if g.condition.is_none() {
                        p.add(at("condition"), "is required with `query` (like `< 0.01`)");
                    }
                    Some(GateSource::Query {
                        query: q.trim().to_string(),
                        condition: condition.unwrap_or(fallback),
                    })
                }
                (None, Some(gf)) => {
                    // The uid goes into a Grafana API path: only Grafana's
                    // own uid alphabet, so it cannot name another endpoint.
                    let uid = gf.dashboard.trim();
                    if p.non_empty(&at("grafana.dashboard"), uid)
                        && (uid.len() > 40
                            || !uid
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
                    {
                        p.add(
                            at("grafana.dashboard"),
                            format!(
                                "`{uid}` is not a dashboard uid (up to 40 letters, digits, `-`, `_`)"
                            ),
                        );
                    }
                    p.non_empty(&at("grafana.panel"), &gf.panel);
                    Some(GateSource::Grafana {
                        dashboard: gf.dashboard.trim().to_string(),
                        panel: gf.panel.trim().to_string(),
                        condition,
                    })
                }
            };
            let interval = p.duration(
                &at("interval"),
                g.interval.as_deref(),
                DEFAULT_GATE_INTERVAL,
            );
            if interval.is_zero() {
                p.add(at("interval"), "must be more than zero");
            }
            let length = match (g.count, &g.duration) {
                (Some(_), Some(_)) => {
                    p.add(format!("gates[{i}]"), "set `count` or `duration`, not both");
                    GateLength::UntilBakeEnds
                }
                (Some(n), None) => match u32::try_from(n) {
                    Ok(n) if n >= 1 => GateLength::Count(n),
                    _ => {
                        p.add(at("count"), format!("{n} must be 1 or more"));
                        GateLength::UntilBakeEnds
                    }
                },
                (None, Some(d)) => {
                    let d = p.duration(&at("duration"), Some(d), Duration::ZERO);
                    if d < interval {
                        p.add(
                            at("duration"),
                            format!(
                                "{} is shorter than the interval {}",
                                daemon::duration::format(d),
                                daemon::duration::format(interval)
                            ),
                        );
                    }
                    GateLength::Duration(d)
                }
                (None, None) => GateLength::UntilBakeEnds,
            };
            let failure_limit = p.non_negative(&at("failure_limit"), g.failure_limit, 0);
            let consecutive_error_limit = p.non_negative(
                &at("consecutive_error_limit"),
                g.consecutive_error_limit,
                DEFAULT_CONSECUTIVE_ERROR_LIMIT,
            );
            if let GateLength::Count(n) = length
                && failure_limit >= n
            {
                p.add(
                    at("failure_limit"),
                    format!(
                        "{failure_limit} must be less than count {n}, or the gate can never fail"
                    ),
                );
            }
            let no_data = match g.no_data.as_deref() {
                None => NoDataPolicy::Inconclusive,
                Some(t) => t.parse().unwrap_or_else(|e| {
                    p.add(at("no_data"), e);
                    NoDataPolicy::Inconclusive
                }),
            };
            if let Some(source) = source {
                gates.push(Gate {
                    name: g.name.trim().to_string(),
                    source,
                    interval,
                    length,
                    failure_limit,
                    consecutive_error_limit,
                    no_data,
                });
            }
        }

        let mut rollback_alerts = Vec::new();
        for (i, a) in self.rollback.alerts.iter().enumerate() {
            match AlertSelector::parse(a) {
                Ok(s) => rollback_alerts.push(s),
                Err(e) => p.add(format!("rollback.alerts[{i}]"), e),
            }
        }

        let limits = Limits {
            max_failed_hosts: p.non_negative(
                "limits.max_failed_hosts",
                self.limits.max_failed_hosts,
                0,
            ),
        };

        let t = &self.timeouts;
        let salt_job = p.duration(
            "timeouts.salt_job",
            t.salt_job.as_deref(),
            DEFAULT_SALT_JOB_TIMEOUT,
        );
        let version_confirm = p.duration(
            "timeouts.version_confirm",
            t.version_confirm.as_deref(),
            DEFAULT_VERSION_CONFIRM_TIMEOUT,
        );
        for (name, d) in [
            ("timeouts.salt_job", salt_job),
            ("timeouts.version_confirm", version_confirm),
        ] {
            if d.is_zero() {
                p.add(name, "must be more than zero");
            }
        }
        let resume = t
            .resume
            .as_deref()
            .map(|r| p.duration("timeouts.resume", Some(r), Duration::ZERO));
        if resume == Some(Duration::ZERO) {
            p.add(
                "timeouts.resume",
                "must be more than zero (leave it out to wait forever)",
            );
        }

        if !p.0.is_empty() {
            return Err(p.0);
        }
        let first = parts[0].clone();
        Ok(Spec {
            component: first.component,
            version: first.version,
            artifact: first.artifact,
            cohorts: first.cohorts,
            parts,
            gates,
            rollback_alerts,
            limits,
            timeouts: Timeouts {
                salt_job,
                version_confirm,
                resume,
            },
            source: self.clone(),
        })
    }
}

/// Checks one component's release and cohorts; `prefix` is `""` for the
/// single-component form and `components[i].` in a list.
fn validate_part(
    p: &mut Problems,
    prefix: &str,
    component: &str,
    version: &str,
    artifact: &ArtifactFile,
    cohorts_file: &[CohortFile],
) -> Part {
    let component = match component.parse::<Component>() {
        Ok(c) => c,
        Err(e) => {
            p.add(format!("{prefix}component"), e);
            Component::Edge
        }
    };

    if p.non_empty(&format!("{prefix}version"), version)
        && !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
    {
        p.add(
            format!("{prefix}version"),
            format!("`{version}` may only contain letters, digits and . _ + -"),
        );
    }

    let url = artifact.url.trim();
    if p.non_empty(&format!("{prefix}artifact.url"), url) {
        let rest = ["salt://", "http://", "https://"]
            .iter()
            .find_map(|s| url.strip_prefix(s));
        match rest {
            None => p.add(
                format!("{prefix}artifact.url"),
                format!("`{url}` must start with salt://, http:// or https://"),
            ),
            Some(r) if r.is_empty() || r.contains(char::is_whitespace) => p.add(
                format!("{prefix}artifact.url"),
                format!("`{url}` must have a path and no spaces"),
            ),
            Some(_) => {}
        }
    }
    let sha = artifact.sha256.trim().to_ascii_lowercase();
    if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        p.add(
            format!("{prefix}artifact.sha256"),
            format!(
                "must be 64 hex digits (got {} characters)",
                artifact.sha256.trim().len()
            ),
        );
    }

    let mut cohorts = Vec::new();
    if cohorts_file.is_empty() {
        p.add(format!("{prefix}cohorts"), "must list at least one cohort");
    }
    let mut names = BTreeSet::new();
    for (i, c) in cohorts_file.iter().enumerate() {
        let at = |f: &str| format!("{prefix}cohorts[{i}].{f}");
        if p.non_empty(&at("name"), &c.name) {
            if !c
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            {
                p.add(
                    at("name"),
                    format!("`{}` may only contain letters, digits and - _ .", c.name),
                );
            }
            if !names.insert(c.name.as_str()) {
                p.add(
                    at("name"),
                    format!("`{}` is already the name of another cohort", c.name),
                );
            }
        }
        if p.non_empty(&at("target"), &c.target)
            && let Err(e) = check_compound_target(&c.target)
        {
            p.add(at("target"), e);
        }
        let batch = match &c.batch {
            None => BatchSize::Percent(100),
            Some(b) => match parse_batch(b) {
                Ok(b) => b,
                Err(e) => {
                    p.add(at("batch"), e);
                    BatchSize::Percent(100)
                }
            },
        };
        let bake = p.duration(&at("bake"), c.bake.as_deref(), DEFAULT_BAKE);
        cohorts.push(Cohort {
            name: c.name.trim().to_string(),
            target: c.target.trim().to_string(),
            batch,
            bake,
        });
    }

    Part {
        component,
        version: version.trim().to_string(),
        artifact: Artifact {
            url: url.to_string(),
            sha256: sha,
        },
        cohorts,
    }
}

fn parse_batch(b: &BatchFile) -> Result<BatchSize, String> {
    let (text, n) = match b {
        BatchFile::Number(n) => (n.to_string(), Some(*n)),
        BatchFile::Text(t) => (t.trim().to_string(), None),
    };
    if let Some(pct) = text.strip_suffix('%') {
        return match pct.trim().parse::<u32>() {
            Ok(p) if (1..=100).contains(&p) => Ok(BatchSize::Percent(p as u8)),
            _ => Err(format!("\"{text}\" must be between 1% and 100%")),
        };
    }
    let n = match n {
        Some(n) => n,
        None => text.parse::<i64>().map_err(|_| {
            format!("\"{text}\" must be a host count like `2` or a percentage like `50%`")
        })?,
    };
    match u32::try_from(n) {
        Ok(n) if n >= 1 => Ok(BatchSize::Count(n)),
        _ => Err(format!("{n} must be a host count of 1 or more")),
    }
}

/// A light check of a Salt compound target: balanced parentheses, known
/// matcher letters, no empty operands. Salt itself is the final judge.
fn check_compound_target(target: &str) -> Result<(), String> {
    if target.contains(['\n', '\r']) {
        return Err("must be on one line".into());
    }
    let mut depth = 0i32;
    let mut expect_operand = true;
    for word in target
        .replace('(', " ( ")
        .replace(')', " ) ")
        .split_whitespace()
    {
        match word {
            "(" => {
                if !expect_operand {
                    return Err(format!("`{target}`: missing `and`/`or` before `(`"));
                }
                depth += 1;
            }
            ")" => {
                depth -= 1;
                if depth < 0 || expect_operand {
                    return Err(format!("`{target}`: unexpected `)`"));
                }
            }
            "and" | "or" => {
                if expect_operand {
                    return Err(format!("`{target}`: `{word}` needs something before it"));
                }
                expect_operand = true;
            }
            "not" => {
                if !expect_operand {
                    return Err(format!("`{target}`: missing `and`/`or` before `not`"));
                }
            }
            operand => {
                if !expect_operand {
                    return Err(format!("`{target}`: missing `and`/`or` before `{operand}`"));
                }
                if let Some((letter, rest)) = operand.split_once('@') {
                    const LETTERS: &[&str] =
                        &["G", "E", "P", "L", "I", "J", "S", "R", "N", "GB", "PCRE"];
                    if !LETTERS.contains(&letter) || rest.is_empty() {
                        return Err(format!(
                            "`{operand}` is not a Salt matcher like `G@role:edge`"
                        ));
                    }
                }
                expect_operand = false;
            }
        }
    }
    if depth != 0 {
        return Err(format!("`{target}`: unbalanced parentheses"));
    }
    if expect_operand {
        return Err(format!("`{target}`: ends without an operand"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/rollout.yaml");

    #[test]
    fn example_parses() {
        let spec = Spec::from_yaml(EXAMPLE).unwrap();
        assert_eq!(spec.component, Component::Edge);
        let names: Vec<_> = spec.cohorts.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["canary", "ams-fra", "rest"]);
        assert_eq!(spec.cohorts[0].batch, BatchSize::Count(1));
        assert_eq!(spec.cohorts[1].batch, BatchSize::Percent(50));
        assert!(!spec.gates.is_empty());
        assert!(!spec.rollback_alerts.is_empty());
        // The stored JSON form validates to the same spec.
        assert_eq!(Spec::from_json(&spec.to_json()).unwrap(), spec);
    }

    #[test]
    fn doc_examples_parse() {
        let doc = include_str!("../../docs/rollout-spec.md");
        let mut found = 0;
        for block in doc.split("```yaml\n").skip(1) {
            let yaml = block.split("```").next().unwrap();
            if let Err(e) = Spec::from_yaml(yaml) {
                panic!("docs/rollout-spec.md example does not parse: {e}\n{yaml}");
            }
            found += 1;
        }
        assert!(found >= 1, "no ```yaml block found in docs/rollout-spec.md");
    }

    fn base() -> String {
        r#"
component: edge
version: v2
artifact:
  url: salt://releases/edge/v2/edge-v2.tar.gz
  sha256: 0000000000000000000000000000000000000000000000000000000000000000
cohorts:
  - name: canary
    target: G@cohort:canary and G@role:edge
    batch: 1
    bake: 1m
  - name: rest
    target: G@role:edge
    batch: 50%
"#
        .to_string()
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec = Spec::from_yaml(&base()).unwrap();
        assert_eq!(spec.cohorts[1].bake, DEFAULT_BAKE);
        assert_eq!(spec.timeouts.salt_job, DEFAULT_SALT_JOB_TIMEOUT);
        assert_eq!(
            spec.timeouts.version_confirm,
            DEFAULT_VERSION_CONFIRM_TIMEOUT
        );
        assert_eq!(spec.timeouts.resume, None);
        assert_eq!(spec.limits.max_failed_hosts, 0);
        assert!(spec.gates.is_empty());
    }

    /// Each case: a replacement of part of `base()` or extra YAML, and the
    /// `path: fragment` every problem list must contain.
    #[test]
    fn bad_specs_name_the_field() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "component: edge",
                "component: router",
                &["component: `router`"],
            ),
            (
                "version: v2",
                "version: \"\"",
                &["version: must not be empty"],
            ),
            ("version: v2", "version: v 2", &["version: `v 2` may only"]),
            (
                "salt://releases/edge/v2/edge-v2.tar.gz",
                "ftp://x/y",
                &["artifact.url: `ftp://x/y` must start with"],
            ),
            (
                "sha256: 0000000000000000000000000000000000000000000000000000000000000000",
                "sha256: abc",
                &["artifact.sha256: must be 64 hex digits"],
            ),
            (
                "batch: 50%",
                "batch: 0%",
                &["cohorts[1].batch: \"0%\" must be between 1% and 100%"],
            ),
            (
                "batch: 50%",
                "batch: 101%",
                &["cohorts[1].batch: \"101%\" must be between"],
            ),
            (
                "batch: 1\n",
                "batch: 0\n",
                &["cohorts[0].batch: 0 must be a host count"],
            ),
            (
                "batch: 50%",
                "batch: lots",
                &["cohorts[1].batch: \"lots\" must be a host count"],
            ),
            (
                "bake: 1m",
                "bake: 60",
                &["cohorts[0].bake: `60` has no unit"],
            ),
            (
                "name: rest",
                "name: canary",
                &["cohorts[1].name: `canary` is already"],
            ),
            (
                "target: G@role:edge\n",
                "target: G@role:edge and\n",
                &["cohorts[1].target: `G@role:edge and`: ends without an operand"],
            ),
            (
                "target: G@role:edge\n",
                "target: (G@role:edge\n",
                &["cohorts[1].target: `(G@role:edge`: unbalanced"],
            ),
            (
                "target: G@role:edge\n",
                "target: X@role:edge\n",
                &["cohorts[1].target: `X@role:edge` is not a Salt matcher"],
            ),
            (
                "cohorts:",
                "gates:\n  - name: errors\n    query: sum(rate(x[1m]))\n    condition: about 1\n    no_data: maybe\n    count: 3\n    duration: 5m\n    failure_limit: -1\n  - name: errors\n    interval: 0s\n    grafana: {dashboard: abc, panel: ''}\n  - name: both\n    query: up\n    grafana: {dashboard: abc, panel: x}\n  - name: none\n  - name: limit\n    query: up\n    condition: '> 0'\n    count: 2\n    failure_limit: 2\ncohorts:",
                &[
                    "gates[0].condition: `about 1` must start with",
                    "gates[0].no_data: `maybe` is not one of",
                    "gates[0]: set `count` or `duration`, not both",
                    "gates[0].failure_limit: -1 must be 0 or more",
                    "gates[1].name: `errors` is already",
                    "gates[1].interval: must be more than zero",
                    "gates[1].grafana.panel: must not be empty",
                    "gates[2]: set `query` or `grafana`, not both",
                    "gates[3]: needs `query` or `grafana`",
                    "gates[4].failure_limit: 2 must be less than count 2",
                ],
            ),
            (
                "cohorts:",
                "gates:\n  - name: q\n    query: up\ncohorts:",
                &["gates[0].condition: is required with `query`"],
            ),
            (
                "cohorts:",
                "rollback:\n  alerts:\n    - '{alertname=\"X\", component=edge}'\n    - '{alertname=~\"(\"}'\n    - '{}'\ncohorts:",
                &[
                    "rollback.alerts[0]: the value of `component` must be in double quotes",
                    "rollback.alerts[1]: `(` is not a regex",
                    "rollback.alerts[2]: must have at least one matcher",
                ],
            ),
            (
                "cohorts:",
                "limits: {max_failed_hosts: -2}\ntimeouts: {salt_job: 0s, version_confirm: soon, resume: 0s}\ncohorts:",
                &[
                    "limits.max_failed_hosts: -2 must be 0 or more",
                    "timeouts.salt_job: must be more than zero",
                    "timeouts.version_confirm: `soon` is not a duration",
                    "timeouts.resume: must be more than zero",
                ],
            ),
        ];
        for (from, to, wants) in cases {
            let text = base().replacen(from, to, 1);
            assert_ne!(text, base(), "case {from:?} changed nothing");
            let problems = match Spec::from_yaml(&text) {
                Err(SpecError::Invalid(p)) => p,
                other => panic!("case {to:?}: expected problems, got {other:?}"),
            };
            let all: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            for want in *wants {
                assert!(
                    all.iter().any(|p| p.starts_with(want)),
                    "case {to:?}: no problem starts with {want:?} in {all:#?}"
                );
            }
            assert_eq!(all.len(), wants.len(), "case {to:?}: {all:#?}");
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = base()
            .replace("component: edge", "component: x")
            .replace("batch: 50%", "batch: 0%")
            .replace("bake: 1m", "bake: never");
        let Err(SpecError::Invalid(p)) = Spec::from_yaml(&text) else {
            panic!("expected problems")
        };
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["component", "cohorts[0].bake", "cohorts[1].batch"]);
    }

    #[test]
    fn unknown_keys_are_refused() {
        for (from, to, path, meant) in [
            (
                "version: v2",
                "version: v2\nverison: v3",
                "verison",
                "version",
            ),
            (
                "bake: 1m",
                "bake: 1m\n    bak: 2m",
                "cohorts[0].bak",
                "bake",
            ),
            ("  url:", "  uri: x\n  url:", "artifact.uri", "url"),
        ] {
            let text = base().replacen(from, to, 1);
            match Spec::from_yaml(&text) {
                Err(SpecError::Invalid(p)) => {
                    assert_eq!(p.len(), 1, "{p:?}");
                    assert_eq!(p[0].path, path);
                    assert!(
                        p[0].message.contains(&format!("did you mean {meant}?")),
                        "{p:?}"
                    );
                }
                other => panic!("{to:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_keys_come_with_every_other_problem() {
        let text = base()
            .replacen("version: v2", "verison: v2\nversion: v2", 1)
            .replacen("bake: 1m", "bak: 1m", 1)
            .replace("batch: 50%", "batch: 0%")
            .replace("component: edge", "component: edgy");
        let Err(SpecError::Invalid(p)) = Spec::from_yaml(&text) else {
            panic!("expected problems")
        };
        let paths: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["verison", "cohorts[0].bak", "component", "cohorts[1].batch"],
            "{p:#?}"
        );
        // A value of the wrong type beside an unknown key: both reported.
        let text = base()
            .replacen("version: v2", "verison: v2\nversion: v2", 1)
            .replacen("bake: 1m", "bake: [1m]", 1);
        let Err(SpecError::Invalid(p)) = Spec::from_yaml(&text) else {
            panic!("expected problems")
        };
        assert_eq!(p.len(), 2, "{p:#?}");
        assert_eq!(p[1].path, "cohorts[0].bake", "{p:#?}");
    }

    #[test]
    fn a_dashboard_uid_cannot_name_another_grafana_endpoint() {
        for uid in ["../../api/admin/users", "a/b", "a?x=1", &"a".repeat(41)] {
            let text = format!(
                "{}gates:\n  - name: g\n    grafana: {{dashboard: '{uid}', panel: p}}\n",
                base()
            );
            let Err(SpecError::Invalid(p)) = Spec::from_yaml(&text) else {
                panic!("{uid} was accepted")
            };
            assert!(
                p.iter().any(|p| p.path == "gates[0].grafana.dashboard"
                    && p.message.contains("not a dashboard uid")),
                "{uid}: {p:?}"
            );
        }
    }

    #[test]
    fn the_shape_knows_every_field_of_a_full_spec() {
        let full = SpecFile {
            gates: vec![GateFile {
                name: "g".into(),
                query: Some("q".into()),
                condition: Some("< 1".into()),
                grafana: Some(GrafanaPanelFile {
                    dashboard: "d".into(),
                    panel: "p".into(),
                }),
                interval: Some("1m".into()),
                count: Some(1),
                duration: Some("1m".into()),
                failure_limit: Some(0),
                consecutive_error_limit: Some(1),
                no_data: Some("fail".into()),
            }],
            rollback: RollbackFile {
                alerts: vec!["{a=\"b\"}".into()],
            },
            limits: LimitsFile {
                max_failed_hosts: Some(1),
            },
            timeouts: TimeoutsFile {
                salt_job: Some("1m".into()),
                version_confirm: Some("1m".into()),
                resume: Some("1h".into()),
            },
            cohorts: vec![CohortFile {
                name: "c".into(),
                target: "*".into(),
                batch: Some(BatchFile::Number(1)),
                bake: Some("1m".into()),
            }],
            components: vec![ComponentFile {
                component: "edge".into(),
                version: "v1".into(),
                artifact: ArtifactFile {
                    url: "salt://a".into(),
                    sha256: "0".into(),
                },
                cohorts: vec![CohortFile {
                    name: "c".into(),
                    target: "*".into(),
                    batch: Some(BatchFile::Number(1)),
                    bake: Some("1m".into()),
                }],
            }],
            ..serde_yaml::from_str::<SpecFile>(&base()).unwrap()
        };
        let mut value = serde_yaml::to_value(&full).unwrap();
        assert_eq!(daemon::config_check::strip(&SPEC_SHAPE, &mut value), vec![]);
    }

    const COMPONENTS_EXAMPLE: &str = include_str!("../../examples/rollout-components.yaml");

    fn two() -> String {
        r#"
components:
  - component: edge
    version: v2
    artifact:
      url: salt://releases/edge/v2/edge-v2.tar.gz
      sha256: 0000000000000000000000000000000000000000000000000000000000000000
    cohorts:
      - name: canary
        target: G@cohort:canary and G@role:edge
        batch: 1
        bake: 1m
      - name: rest
        target: G@role:edge
  - component: connector
    version: v3
    artifact:
      url: salt://releases/connector/v3/connector-v3.tar.gz
      sha256: 1111111111111111111111111111111111111111111111111111111111111111
    cohorts:
      - name: all
        target: G@role:connector
        batch: 1
"#
        .to_string()
    }

    #[test]
    fn several_components_in_order() {
        let spec = Spec::from_yaml(&two()).unwrap();
        assert_eq!(spec.components(), [Component::Edge, Component::Connector]);
        // The first component is also the spec's own.
        assert_eq!(spec.component, Component::Edge);
        assert_eq!(spec.version, "v2");
        assert_eq!(spec.cohorts, spec.parts[0].cohorts);
        let connector = spec.part(Component::Connector).unwrap();
        assert_eq!(connector.version, "v3");
        assert_eq!(connector.cohorts[0].bake, DEFAULT_BAKE);
        assert_eq!(connector.artifact.sha256, "1".repeat(64));
        assert_eq!(spec.describe(), "edge v2 then connector v3");
        // The stored JSON form validates to the same spec.
        assert_eq!(Spec::from_json(&spec.to_json()).unwrap(), spec);
        // One component is a single part.
        let one = Spec::from_yaml(&base()).unwrap();
        assert_eq!(one.components(), [Component::Edge]);
        assert_eq!(one.describe(), "edge v2");
        // The example file parses.
        let example = Spec::from_yaml(COMPONENTS_EXAMPLE).unwrap();
        assert_eq!(
            example.components(),
            [Component::Edge, Component::Connector]
        );
    }

    #[test]
    fn a_stored_single_component_spec_still_loads() {
        // The JSON a store row holds from before `components:` existed.
        let old = r#"{"component":"connector","version":"v2","artifact":{"url":"salt://r/c.tar.gz","sha256":"0000000000000000000000000000000000000000000000000000000000000000"},"cohorts":[{"name":"all","target":"G@role:connector"}]}"#;
        let spec = Spec::from_json(old).unwrap();
        assert_eq!(spec.components(), [Component::Connector]);
        assert_eq!(Spec::from_json(&spec.to_json()).unwrap(), spec);
        assert!(!spec.to_json().contains("components"), "{}", spec.to_json());
    }

    /// `path: fragment` for specs with `components:`.
    #[test]
    fn bad_component_lists_name_the_field() {
        let swapped = two()
            .replacen("component: edge", "component: tmp", 1)
            .replacen("component: connector", "component: edge", 1)
            .replacen("component: tmp", "component: connector", 1);
        let cases: &[(String, &[&str])] = &[
            (
                swapped,
                &["components[0].component: connector must come after edge (components[1])"],
            ),
            (
                two().replacen("component: connector", "component: edge", 1),
                &["components[1].component: `edge` is already listed at components[0]"],
            ),
            (
                two().replacen("component: connector", "component: router", 1),
                &["components[1].component: `router` is not"],
            ),
            (
                two().replacen("sha256: 1111", "sha256: 11", 1),
                &["components[1].artifact.sha256: must be 64 hex digits"],
            ),
            (
                two().replacen("version: v3", "version: v 3", 1),
                &["components[1].version: `v 3` may only"],
            ),
            (
                two().replacen(
                    "target: G@role:connector\n        batch: 1",
                    "target: G@role:connector\n        batch: 0%",
                    1,
                ),
                &["components[1].cohorts[0].batch: \"0%\" must be between"],
            ),
            (
                two().replacen(
                    "    cohorts:\n      - name: all\n        target: G@role:connector\n        batch: 1\n",
                    "",
                    1,
                ),
                &["components[1].cohorts: must list at least one cohort"],
            ),
            (
                format!("version: v9\n{}", two()),
                &["version: set `components:` or the single"],
            ),
            (
                format!("cohorts:\n  - name: x\n    target: '*'\n{}", two()),
                &["cohorts: set `components:` or the single"],
            ),
            (
                two().replacen("        bake: 1m", "        bak: 1m", 1),
                &["components[0].cohorts[0].bak"],
            ),
            (
                "cohorts:\n  - name: x\n    target: '*'\n".to_string(),
                &[
                    "component: is required",
                    "version: is required",
                    "artifact: is required",
                ],
            ),
        ];
        for (text, want) in cases {
            let problems = match Spec::from_yaml(text) {
                Err(SpecError::Invalid(p)) => p,
                other => panic!("expected problems for\n{text}\ngot {other:?}"),
            };
            let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
            for w in *want {
                assert!(
                    shown.iter().any(|p| p.contains(w)),
                    "missing `{w}` in {shown:#?}"
                );
            }
        }
    }

    #[test]
    fn conditions() {
        let cases = [
            ("< 0.01", 0.005, true),
            ("< 0.01", 0.01, false),
            ("<=0.01", 0.01, true),
            ("> 5", 6.0, true),
            (">= 5", 5.0, true),
            (">= 5", 4.9, false),
            ("== 1", 1.0, true),
            ("!= 0", 0.0, false),
            ("< 1", f64::NAN, false),
        ];
        for (text, value, want) in cases {
            let c = Condition::parse(text).unwrap();
            assert_eq!(c.holds(value), want, "{text} on {value}");
        }
        for bad in ["", "0.01", "< x", "=< 1", "< inf"] {
            assert!(Condition::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn batch_sizes() {
        let cases = [
            (BatchSize::Count(2), 10, 2),
            (BatchSize::Count(20), 10, 10),
            (BatchSize::Count(3), 0, 1),
            (BatchSize::Percent(50), 5, 3),
            (BatchSize::Percent(10), 101, 11),
            (BatchSize::Percent(1), 3, 1),
            (BatchSize::Percent(100), 7, 7),
        ];
        for (b, eligible, want) in cases {
            assert_eq!(b.hosts_per_batch(eligible), want, "{b} of {eligible}");
        }
    }

    #[test]
    fn alert_selectors() {
        let s = AlertSelector::parse(
            r#"{alertname="EdgeReleaseErrorRatioHigh", component="edge", severity!="info", dc=~"ams|fra", v!~"v1.*"}"#,
        )
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let base = [
            ("alertname", "EdgeReleaseErrorRatioHigh"),
            ("component", "edge"),
            ("dc", "ams"),
            ("v", "v2"),
        ];
        assert!(s.matches(&labels(&base)));
        let mut other_dc = base;
        other_dc[2] = ("dc", "amsx");
        assert!(!s.matches(&labels(&other_dc)), "regex is anchored");
        let mut old = base;
        old[3] = ("v", "v1.2");
        assert!(!s.matches(&labels(&old)));
        assert!(!s.matches(&labels(&base[..1])), "component missing");
        let esc = AlertSelector::parse(r#"a="x\"y""#).unwrap();
        assert_eq!(esc.matchers[0].value, "x\"y");
    }

    #[test]
    fn gate_effective_count() {
        let spec = Spec::from_yaml(EXAMPLE).unwrap();
        for g in &spec.gates {
            match g.length {
                GateLength::Count(n) => assert_eq!(g.effective_count(), Some(n)),
                GateLength::Duration(d) => assert_eq!(
                    g.effective_count(),
                    Some((d.as_secs() / g.interval.as_secs()) as u32)
                ),
                GateLength::UntilBakeEnds => assert_eq!(g.effective_count(), None),
            }
        }
    }
}
