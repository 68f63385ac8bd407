//! The JSON Schema of the config file, generated from the file-shaped types in `raw` (draft-07,
//! the dialect Taplo and most editors understand). `schema/vfio.schema.json` is this output.

use schemars::generate::SchemaSettings;

use crate::config::raw::RawConfig;

/// The schema as a JSON value.
pub fn json_schema() -> serde_json::Value {
    let schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<RawConfig>();
    schema.to_value()
}

/// The schema as pretty-printed JSON text with a final newline, exactly as committed in
/// `schema/vfio.schema.json`.
pub fn json_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{
        DEVICE_KEYS, DOMAIN_KEYS, SRIOV_KEYS, TOP_KEYS, USER_KEYS, WINDOW_KEYS,
    };

    fn properties(v: &serde_json::Value) -> Vec<String> {
        let mut keys: Vec<String> = v["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut k: Vec<String> = keys.iter().map(|s| s.to_string()).collect();
        k.sort();
        k
    }

    #[test]
    fn key_lists_match_the_types() {
        let s = json_schema();
        let defs = &s["definitions"];
        assert_eq!(properties(&s), sorted(TOP_KEYS));
        assert_eq!(properties(&defs["Device"]), sorted(DEVICE_KEYS));
        assert_eq!(properties(&defs["User"]), sorted(USER_KEYS));
        assert_eq!(properties(&defs["Sriov"]), sorted(SRIOV_KEYS));
        assert_eq!(properties(&defs["Domain"]), sorted(DOMAIN_KEYS));
        assert_eq!(properties(&defs["Window"]), sorted(WINDOW_KEYS));
    }

    #[test]
    fn schema_rejects_unknown_keys_and_documents_them() {
        let s = json_schema();
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["definitions"]["Device"]["additionalProperties"], false);
        let addr = &s["definitions"]["Device"]["properties"]["address"];
        assert!(addr["description"]
            .as_str()
            .unwrap()
            .contains("PCI address"));
        assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
    }
}
