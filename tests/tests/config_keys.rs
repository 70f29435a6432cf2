//! Every key the configuration structs accept appears in a commented
//! example under `deploy/` (issue 15): the examples are the reference an
//! administrator reads, so a key added to the code but not to them fails
//! here instead of going undocumented.
//!
//! The keys are read off the `Deserialize` implementations themselves by
//! serde-reflection's tracer (no list kept by hand), recursively through
//! every nested table; a key counts as documented when the example has a
//! line `key = …` or `# key = …`, or a table header naming it.

use std::collections::BTreeSet;

use serde_reflection::{ContainerFormat, Named, Samples, Tracer, TracerConfig};

/// Field names of every struct reachable from `T`, with the struct's name.
fn keys<T: serde::de::DeserializeOwned>() -> BTreeSet<(String, String)> {
    let mut tracer = Tracer::new(TracerConfig::default().record_samples_for_structs(true));
    let samples = Samples::new();
    tracer.trace_type::<T>(&samples).expect("trace the config type");
    // Unchecked: an enum nested in a table (a mode such as `unreadable`)
    // is traced through one variant only; its values are not keys.
    let registry = tracer.registry_unchecked();
    let mut out = BTreeSet::new();
    for (name, format) in &registry {
        if let ContainerFormat::Struct(fields) = format {
            for Named { name: field, .. } in fields {
                out.insert((name.clone(), field.clone()));
            }
        }
    }
    out
}

/// Whether `key` is written as a key (set or commented out) or a table
/// header in `example`.
fn documented(example: &str, key: &str) -> bool {
    example.lines().any(|l| {
        let l = l.trim_start().trim_start_matches('#').trim();
        l.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
            || l.starts_with(&format!("[{key}]"))
            || l.starts_with(&format!("[[{key}]]"))
            || l.starts_with('[') && l.trim_matches(|c| c == '[' || c == ']').split('.').any(|p| p == key)
    })
}

fn missing(example: &str, keys: &BTreeSet<(String, String)>) -> Vec<String> {
    keys.iter().filter(|(_, k)| !documented(example, k)).map(|(s, k)| format!("{s}.{k}")).collect()
}

fn example(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_node_key_is_in_deploy_node_toml() {
    let keys = keys::<ferry_node::config::NodeConfig>();
    assert!(keys.iter().any(|(_, k)| k == "base_dir") && keys.len() > 40, "traced too little: {keys:?}");
    let missing = missing(&example("node.toml"), &keys);
    assert!(missing.is_empty(), "keys no example documents (add them to deploy/node.toml): {missing:?}");
}

#[test]
fn every_client_key_is_in_deploy_client_toml() {
    let keys = keys::<ferry_client::config::ClientConfig>();
    assert!(keys.iter().any(|(_, k)| k == "state_dir") && keys.len() > 30, "traced too little: {keys:?}");
    let missing = missing(&example("client.toml"), &keys);
    assert!(missing.is_empty(), "keys no example documents (add them to deploy/client.toml): {missing:?}");
}

#[test]
fn an_undocumented_key_is_caught() {
    let keys: BTreeSet<(String, String)> = [("Mail".to_owned(), "max_per_hour".to_owned())].into();
    assert_eq!(missing("[mail]\n# to = []\n", &keys), ["Mail.max_per_hour"]);
    assert!(missing("[mail]\n# max_per_hour = 20\n", &keys).is_empty());
    assert!(missing("max_per_hour=3\n", &keys).is_empty());
    assert!(!missing("# max_per_hourly = 3\n", &keys).is_empty(), "a longer key is not this one");
}
