//! `PLAN.json`, what `rollout plan -o` writes and `rollout apply` and
//! `POST /v1/rollouts` take: the spec as written and the plan made from it,
//! so applying needs nothing else.

use serde_json::json;

use crate::plan::Plan;
use crate::spec::Spec;

/// The plan file's text.
pub fn write(spec: &Spec, plan: &Plan) -> String {
    let spec: serde_json::Value = serde_json::from_str(&spec.to_json()).unwrap_or_default();
    let plan: serde_json::Value = serde_json::from_str(&plan.to_json()).unwrap_or_default();
    serde_json::to_string_pretty(&json!({"spec": spec, "plan": plan})).unwrap_or_default()
}

/// The spec (validated again) and the plan of a plan file's text, or what
/// is wrong with it.
pub fn parse(text: &[u8]) -> Result<(Spec, Plan), String> {
    let v: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("not a plan file: {e}"))?;
    if !v.is_object() || v.get("spec").is_none() || v.get("plan").is_none() {
        return Err(
            "not a plan file: expected {\"spec\": ..., \"plan\": ...} as `rollout plan -o PLAN.json` writes"
                .into(),
        );
    }
    let spec = Spec::from_json(&v["spec"].to_string()).map_err(|e| format!("spec: {e}"))?;
    let plan = Plan::from_json(&v["plan"].to_string()).map_err(|e| format!("plan: {e}"))?;
    Ok((spec, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_plan_file_says_so() {
        for text in ["", "[]", "{}", "{\"spec\": {}}", "not json"] {
            let e = parse(text.as_bytes()).unwrap_err();
            assert!(e.contains("plan"), "{text}: {e}");
        }
        let e = parse(br#"{"spec": {"component": "edge"}, "plan": {}}"#).unwrap_err();
        assert!(e.starts_with("spec: "), "{e}");
    }
}
