//! Conditions in the Gateway API's shape, built without times: the status writer adds
//! `lastTransitionTime` when it writes.

use serde::Serialize;
use serde_json::{Value, json};

/// One condition: type, whether it holds, the spec's reason and a message.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Cond {
    pub type_: &'static str,
    pub holds: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Cond {
    pub fn yes(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Cond {
            type_,
            holds: true,
            reason,
            message: message.into(),
        }
    }

    pub fn no(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Cond {
            type_,
            holds: false,
            reason,
            message: message.into(),
        }
    }

    pub fn to_json(&self, generation: Option<i64>) -> Value {
        let mut condition = json!({
            "type": self.type_,
            "status": if self.holds { "True" } else { "False" },
            "reason": self.reason,
            "message": self.message,
        });
        if let Some(generation) = generation {
            condition["observedGeneration"] = json!(generation);
        }
        condition
    }
}

pub fn to_json(conditions: &[Cond], generation: Option<i64>) -> Value {
    Value::Array(
        conditions
            .iter()
            .map(|condition| condition.to_json(generation))
            .collect(),
    )
}

/// The first condition that does not hold in the way its type wants (`Conflicted` wants
/// `False`, every other type `True`): what the object's summary reports.
pub fn first_problem(conditions: &[Cond]) -> Option<&Cond> {
    conditions
        .iter()
        .find(|condition| condition.holds == (condition.type_ == "Conflicted"))
}

/// A condition as written, fields in alphabetical order: serialized straight to text, it reads
/// exactly as the same status parsed into a `serde_json::Value` prints (what statuses are
/// compared as), without building that value first.
#[derive(Serialize)]
pub struct Written<'a> {
    message: &'a str,
    #[serde(rename = "observedGeneration", skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
    reason: &'a str,
    status: &'static str,
    #[serde(rename = "type")]
    type_: &'a str,
}

impl Cond {
    pub fn written(&self, generation: Option<i64>) -> Written<'_> {
        Written {
            message: &self.message,
            observed_generation: generation,
            reason: self.reason,
            status: if self.holds { "True" } else { "False" },
            type_: self.type_,
        }
    }
}
