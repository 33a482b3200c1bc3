//! Rapport's native core for the replay (a Python extension, `rapport_native`).
//!
//! `decode`: logged events straight into touches and the interaction rows' Arrow columns, then
//! each relationship's touches replayed. `relationship`: a relationship replayed straight into
//! its stored JSON (`json`) and its `relationships` row (`columns`). `fold`: a whole sorted
//! history folded into one Python tally (`fold_in_order`). Each stands in for a Python function that stays the reference, tested equal
//! to it (tests/unit/test_replay_native.py, tests/unit/test_in_order_fold.py).

#![allow(clippy::useless_conversion)] // PyO3 0.22's #[pymethods] expansion, not our code

use pyo3::prelude::*;

mod columns;
mod decode;
mod fold;
mod json;
mod relationship;

#[pymodule]
fn rapport_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<decode::Decoder>()?;
    m.add_function(wrap_pyfunction!(decode::epoch_ms_of, m)?)?;
    m.add_function(wrap_pyfunction!(fold::fold_in_order, m)?)?;
    m.add_function(wrap_pyfunction!(json::json_string, m)?)?;
    m.add_function(wrap_pyfunction!(json::json_float, m)?)?;
    Ok(())
}
