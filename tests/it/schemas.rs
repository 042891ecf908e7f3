//! The JSON Schemas in `schemas/` agree with the parsers: removing any required field from a
//! valid sample record makes the parser quarantine it as `schema_mismatch`.

use hindsight::episode::SourceFormat;
use hindsight::ingest::formats::{detect, parse};
use hindsight::ingest::QuarantineReason;

fn schema(name: &str) -> serde_json::Value {
    let p = format!("{}/schemas/{name}.schema.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(p).expect("schema file")).expect("schema json")
}

#[test]
fn required_fields_match_parsers() {
    let samples = [
        ("wildchat", SourceFormat::Wildchat, "wildchat_1m.jsonl"),
        ("openai", SourceFormat::Openai, "openai_messages.jsonl"),
        (
            "demonstration",
            SourceFormat::Demonstration,
            "demonstrations.jsonl",
        ),
        ("unit_test", SourceFormat::UnitTest, "unit_tests.jsonl"),
        ("hint", SourceFormat::Hint, "hints.jsonl"),
    ];
    for (name, format, file) in samples {
        let s = schema(name);
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        let bytes =
            std::fs::read(format!("{}/sample-data/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        // openai_messages.jsonl holds an invalid-UTF-8 line on purpose; the first line is fine.
        let text = String::from_utf8_lossy(&bytes);
        let record: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(detect(&record), Some(format), "{name}");
        assert!(parse(&record, format).is_ok(), "{name}");
        // Every input schema names required fields; an empty list would make the loop below
        // pass without checking anything.
        let required = s["required"].as_array().expect("required is a list");
        assert!(
            !required.is_empty(),
            "{name}: schema lists no required fields"
        );
        for req in required {
            let mut r = record.clone();
            r.as_object_mut().unwrap().remove(req.as_str().unwrap());
            let err = parse(&r, format).expect_err(name);
            assert_eq!(err.reason, QuarantineReason::SchemaMismatch, "{name}.{req}");
        }
    }
    let sg = schema("sharegpt");
    assert_eq!(sg["required"], serde_json::json!(["conversations"]));
    let q = schema("quarantine_entry");
    assert_eq!(q["properties"]["snippet"]["maxLength"], 512);
}
