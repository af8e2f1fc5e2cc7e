//! `.kompactor/names.json` from a measurement: the database and table names the server shows,
//! by the ids in their files' paths, for the commands that name tables while the server is
//! stopped (`archive`, `delete`).

use crate::durable::journal::RunDirs;
use crate::format::ids::{DbId, TableId};
use crate::pipeline::archive::{NamedDb, NamedTable, NamesFile};
use crate::server::measure::Measurement;
use std::fs;
use std::path::Path;

/// The names file a measurement gives.
pub fn names_of(m: &Measurement) -> NamesFile {
    let mut doc = NamesFile {
        format_version: 1,
        url: Some(m.url.clone()),
        written_at: Some(m.started_at.clone()),
        databases: Default::default(),
    };
    let empty = || NamedDb {
        id: None,
        tables: Default::default(),
    };
    for db in &m.databases {
        doc.databases.insert(db.clone(), empty());
    }
    for t in &m.tables {
        let d = doc.databases.entry(t.db.clone()).or_insert_with(empty);
        if d.id.is_none() {
            d.id = t.ids.map(|(db, _)| DbId(db));
        }
        d.tables.insert(
            t.table.clone(),
            NamedTable {
                id: t.ids.map(|(_, table)| TableId(table)),
            },
        );
    }
    doc
}

/// Writes `DATA_DIR/.kompactor/names.json` from `m`, replacing it whole.
pub fn write_names(data_dir: &Path, m: &Measurement) -> Result<(), String> {
    let path = RunDirs::state_dir(data_dir).join("names.json");
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, crate::json::to_string(&names_of(m)) + "\n")
        .and_then(|_| fs::rename(&tmp, &path))
        .map_err(|e| format!("could not write {}: {e}", path.display()))
}
