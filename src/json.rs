//! kompactor's own JSON documents: their version, and the one way they are printed.
//!
//! Every document a script may read (`--json` output, `report.json`, `plan.json`, the journal,
//! archive manifests, `names.json`) is a typed struct with named fields and a
//! `format_version`; `docs/json.md` describes each field. A change that removes or renames a
//! field, or changes its meaning, raises the version.

use serde::Serialize;

/// The version of every document's layout.
pub const FORMAT_VERSION: u32 = 2;

/// Prints a document as pretty JSON on stdout, one document per invocation.
pub fn print<T: Serialize>(doc: &T) {
    println!("{}", to_string(doc));
}

/// A document as pretty JSON text.
pub fn to_string<T: Serialize>(doc: &T) -> String {
    serde_json::to_string_pretty(doc).expect("kompactor's documents serialise")
}
