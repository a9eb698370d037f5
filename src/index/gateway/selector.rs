//! Kubernetes label selectors, for listeners whose `allowedRoutes.namespaces` select namespaces
//! by label.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::index::{Index, ObjectKey};

/// The label every namespace carries with its own name (the API server sets it).
const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Whether `selector` selects the namespace `name`. A namespace kube-iap has not seen has only
/// its name label; an operator it does not know selects nothing.
pub fn selects_namespace(index: &Index, selector: &LabelSelector, name: &str) -> bool {
    let mut labels: BTreeMap<&str, &str> = index
        .namespaces
        .get(&ObjectKey::new("", name))
        .and_then(|namespace| namespace.metadata.labels.as_ref())
        .into_iter()
        .flatten()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    labels.insert(NAME_LABEL, name);
    selects(selector, &labels)
}

fn selects(selector: &LabelSelector, labels: &BTreeMap<&str, &str>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key.as_str()) == Some(&value.as_str()));
    let by_expressions = selector
        .match_expressions
        .iter()
        .flatten()
        .all(|expression| {
            let present = labels.get(expression.key.as_str());
            let listed = |value: &&str| {
                expression
                    .values
                    .iter()
                    .flatten()
                    .any(|listed| listed == value)
            };
            match expression.operator.as_str() {
                "In" => present.is_some_and(listed),
                "NotIn" => !present.is_some_and(listed),
                "Exists" => present.is_some(),
                "DoesNotExist" => present.is_none(),
                _ => false,
            }
        });
    by_labels && by_expressions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(yaml: &str) -> LabelSelector {
        serde_yaml::from_str(yaml).expect("a selector")
    }

    #[test]
    fn labels_and_expressions_must_all_hold() {
        let labels = BTreeMap::from([("team", "a"), ("env", "prod")]);
        let cases = [
            ("{}", true),
            ("{matchLabels: {team: a}}", true),
            ("{matchLabels: {team: b}}", false),
            (
                "{matchExpressions: [{key: env, operator: In, values: [prod, stage]}]}",
                true,
            ),
            (
                "{matchExpressions: [{key: env, operator: NotIn, values: [prod]}]}",
                false,
            ),
            (
                "{matchExpressions: [{key: tier, operator: NotIn, values: [x]}]}",
                true,
            ),
            ("{matchExpressions: [{key: team, operator: Exists}]}", true),
            (
                "{matchExpressions: [{key: team, operator: DoesNotExist}]}",
                false,
            ),
            (
                "{matchExpressions: [{key: team, operator: Gt, values: ['1']}]}",
                false,
            ),
            (
                "{matchLabels: {team: a}, matchExpressions: [{key: env, operator: In, values: [dev]}]}",
                false,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(selects(&selector(text), &labels), want, "{text}");
        }
    }
}
