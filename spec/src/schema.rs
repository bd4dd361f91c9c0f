//! JSON Schemas for spec files, generated from the record types. The checked-in
//! copies in `schema/` are compared with these by a test, so they never go stale;
//! run `UPDATE_SCHEMA=1 cargo test -p sdp-spec schema` to regenerate them.

use schemars::{JsonSchema, generate::SchemaSettings};

use crate::parse::TOML_VERSION;
use crate::record::{Gateway, Sandbox, Service};

/// `(file name, pretty JSON)` for every record kind.
pub fn schemas() -> Vec<(String, String)> {
    vec![
        (
            "service.schema.json".into(),
            schema_for::<Service>("service"),
        ),
        (
            "gateway.schema.json".into(),
            schema_for::<Gateway>("gateway"),
        ),
        (
            "sandbox.schema.json".into(),
            schema_for::<Sandbox>("sandbox"),
        ),
    ]
}

fn schema_for<T: JsonSchema>(kind: &str) -> String {
    let generator = SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<T>();
    schema.insert(
        "$comment".into(),
        format!(
            "SDP {kind} record. Spec files are TOML {TOML_VERSION} (inline tables may span lines); \
             generated from the sdp-spec crate, do not edit."
        )
        .into(),
    );
    let mut out = serde_json::to_string_pretty(&schema).expect("schemas serialize");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn schema_files_are_current() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schema");
        let update = std::env::var_os("UPDATE_SCHEMA").is_some();
        let mut stale = Vec::new();
        for (name, content) in schemas() {
            let path = dir.join(&name);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &content).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
                stale.push(name);
            }
        }
        assert!(
            stale.is_empty(),
            "schema/ is stale for {stale:?}: run `UPDATE_SCHEMA=1 cargo test -p sdp-spec schema` and commit the result"
        );
    }
}
