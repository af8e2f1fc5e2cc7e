//! Staging a computed commit in the run directory, ready for the journal to apply.

use super::trash::trash_moves;
use super::{rel_to_data_dir, Committed, NodeCommit};
use crate::durable::fsutil::Batch;
use crate::durable::journal::{to_mtime, MetaWrite, NodeManifest, RunDirs};
use crate::error::Result;
use crate::pipeline::discover::Node;
use crate::pipeline::prepared::Prepared;

/// Stages a computed commit in the run directory: every file with the modification time it
/// will have, and the original of every file it replaces (a second link to it: no copy, and
/// its mtime stays).
pub(super) fn stage_node(
    node: &Node,
    c: NodeCommit,
    dirs: &RunDirs,
    prestaged: Option<&Prepared>,
) -> Result<(NodeManifest, Committed)> {
    let NodeCommit {
        files,
        mut manifest,
        mut committed,
        replaced,
    } = c;
    let mut clock = crate::progress::StepClock::new(&node.id);
    manifest.replaced = trash_moves(node, &replaced, &manifest.outputs, dirs);
    clock.done(&format!(
        "planning {} trash move(s)",
        manifest.replaced.len()
    ));
    let mut batch = Batch::default();
    for f in &files {
        let bytes = f.to_bytes();
        if f.existed {
            committed.metadata_bytes_after += bytes.len() as u64;
        }
        let in_node = f.in_node(node);
        let staged = format!("staged/{}/{in_node}", node.id);
        let staged_path = dirs.run().join(&staged);
        let ready = prestaged
            .filter(|_| f.existed)
            .and_then(|p| p.metadata_file(&node.id, &in_node, &bytes, f.mtime));
        match ready {
            // Flushed by `prepare`: only the move is new.
            Some(ready) => {
                batch.rename(&ready, &staged_path)?;
                committed.metadata_files_prepared += 1;
            }
            None => batch.write(&staged_path, &bytes, f.mtime)?,
        }
        let original = if f.existed {
            let rel = format!("original/{}/{in_node}", node.id);
            batch.link(&f.path, &dirs.run().join(&rel))?;
            Some(rel)
        } else {
            None
        };
        manifest.writes.push(MetaWrite {
            dest: rel_to_data_dir(dirs, &f.path),
            staged,
            mtime: f.mtime.map(to_mtime),
            original,
        });
    }
    clock.done(&format!("staging {} metadata file(s)", files.len()));
    batch.finish()?;
    clock.done("flushing them");
    Ok((manifest, committed))
}
