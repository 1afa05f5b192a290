//! A small JSON Schema (draft-07) validator for the keywords speedscope's file-format schema
//! uses: `$ref` (local), `anyOf`, `const`, `enum`, `items`, `properties`, `required`, `type`.
//! Annotations (`title`, `$schema`, `definitions`) are skipped; any other keyword is an error,
//! so a schema this cannot check fails the test instead of passing it.
//! Shared by the integration tests (through `common`) and the exporters' unit tests (by path).

use serde_json::Value;

/// speedscope 1.25.0's `file-format-schema.json` (see tests/data/speedscope/README.md).
pub const SPEEDSCOPE_SCHEMA: &str = include_str!("../data/speedscope/file-format-schema.json");

/// Every place where `doc` breaks `schema`, as `path: what`; empty when it is valid.
pub fn validate(schema: &Value, doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, schema, doc, "$", &mut errors);
    errors
}

fn check(root: &Value, schema: &Value, doc: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        errors.push(format!("{path}: schema is not an object: {schema}"));
        return;
    };
    for (key, rule) in obj {
        match key.as_str() {
            "title" | "$schema" | "definitions" | "description" => {}
            "$ref" => match rule.as_str().and_then(|r| resolve(root, r)) {
                Some(target) => check(root, target, doc, path, errors),
                None => errors.push(format!("{path}: unresolvable $ref {rule}")),
            },
            "anyOf" => {
                let options = rule.as_array().map(Vec::as_slice).unwrap_or_default();
                let fits = options.iter().any(|option| {
                    let mut sub = Vec::new();
                    check(root, option, doc, path, &mut sub);
                    sub.is_empty()
                });
                if !fits {
                    errors.push(format!("{path}: matches none of {} alternatives", options.len()));
                }
            }
            "const" if doc != rule => errors.push(format!("{path}: {doc} is not {rule}")),
            "const" => {}
            "enum" if !rule.as_array().is_some_and(|values| values.contains(doc)) => {
                errors.push(format!("{path}: {doc} is not one of {rule}"))
            }
            "enum" => {}
            "type" => {
                let fits = match rule.as_str() {
                    Some("object") => doc.is_object(),
                    Some("array") => doc.is_array(),
                    Some("string") => doc.is_string(),
                    Some("number") => doc.is_number(),
                    Some("integer") => doc.is_i64() || doc.is_u64(),
                    Some("boolean") => doc.is_boolean(),
                    Some("null") => doc.is_null(),
                    _ => false,
                };
                if !fits {
                    errors.push(format!("{path}: {} is not of type {rule}", short(doc)));
                }
            }
            "required" => {
                for name in rule.as_array().into_iter().flatten().filter_map(Value::as_str) {
                    if doc.is_object() && doc.get(name).is_none() {
                        errors.push(format!("{path}: missing required {name:?}"));
                    }
                }
            }
            "properties" => {
                let (Some(props), Some(fields)) = (rule.as_object(), doc.as_object()) else { continue };
                for (name, sub) in props {
                    if let Some(value) = fields.get(name) {
                        check(root, sub, value, &format!("{path}.{name}"), errors);
                    }
                }
            }
            "items" => {
                for (i, item) in doc.as_array().into_iter().flatten().enumerate() {
                    check(root, rule, item, &format!("{path}[{i}]"), errors);
                }
            }
            other => errors.push(format!("{path}: schema keyword {other:?} is not supported by this checker")),
        }
    }
}

fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    // JSON pointer escapes: `~1` is `/`, `~0` is `~` (none in speedscope's names, but cheap).
    let mut at = root;
    for part in pointer.split('/').skip(1) {
        at = at.get(part.replace("~1", "/").replace("~0", "~"))?;
    }
    Some(at)
}

fn short(doc: &Value) -> String {
    let text = doc.to_string();
    if text.len() > 60 {
        format!("{}...", &text[..text.char_indices().nth(57).map_or(text.len(), |(i, _)| i)])
    } else {
        text
    }
}
