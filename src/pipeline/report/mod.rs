//! What the operator sees: the plan, the findings, and the summary of a run; `doc` holds the
//! typed documents (the JSON), `text` prints them for a person.

mod doc;
mod text;

pub use doc::{
    CrossChunkWindow, GroupFailure, NodeReport, NodeRun, Phases, PlanDoc, RunOptions, RunReport,
    TableOutcome, TableRun,
};
pub use text::{plan_text, run_text};
