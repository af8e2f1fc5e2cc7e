//! Parsing then writing every snapshot, checkpoint and table-index file of every fixture
//! gives back equal JSON: every key, every integer exactly.

mod common;

use kompactor::format::model::{Checkpoint, Doc, Snapshot, TableIndex, TableIndexMarker};
use serde_json::Value;
use std::path::Path;

fn check<T: serde::Serialize + serde::de::DeserializeOwned>(p: &Path) {
    let bytes = std::fs::read(p).unwrap();
    let doc: Doc<T> = Doc::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let original: Value = serde_json::from_slice(&bytes).unwrap();
    let written = doc.to_bytes();
    let via_tree = serde_json::to_vec_pretty(&doc.to_value()).unwrap();
    assert!(written == via_tree, "{}: printed text", p.display());
    let back: Value = serde_json::from_slice(&written).unwrap();
    assert_eq!(back, original, "{}", p.display());
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&back), keys(&original), "{}: key order", p.display());
}

#[test]
fn every_metadata_file_of_every_fixture_round_trips() {
    let mut counts = [0usize; 4];
    for f in common::fixtures() {
        for e in walkdir::WalkDir::new(&f.dir)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
        {
            let p = e.path();
            let s = p.to_string_lossy();
            if s.contains("/expected/") {
                continue;
            }
            if s.contains("/snapshots/") && s.ends_with(".info.json") {
                check::<Snapshot>(p);
                counts[0] += 1;
            } else if s.ends_with(".checkpoint.json") {
                check::<Checkpoint>(p);
                counts[1] += 1;
            } else if s.contains("/db-indices/") && s.ends_with(".info.json") {
                check::<TableIndex>(p);
                counts[2] += 1;
            } else if s.ends_with("/table-index-conversion-completed") {
                check::<TableIndexMarker>(p);
                counts[3] += 1;
            }
        }
    }
    assert!(
        counts.iter().all(|c| *c > 0),
        "each kind was seen: {counts:?}"
    );
}
