//! The `relationships` rows a replay writes, column by column in Arrow's own layout (what
//! `streams.replay.arrow.relationship_arrow` makes from `view_row` dicts): an int32 offset per
//! string or list, a validity bitmap where a column has nulls, little-endian numbers.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

/// A string column: an int32 offset per string (after a leading 0) and the bytes.
#[derive(Default)]
pub struct Texts {
    offsets: Vec<i32>,
    data: Vec<u8>,
}

impl Texts {
    pub fn push(&mut self, s: &str) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.data.extend_from_slice(s.as_bytes());
        self.offsets.push(self.data.len() as i32);
    }

    /// (offsets, data) as bytes, and the column emptied.
    pub fn take<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyTuple> {
        let t = PyTuple::new_bound(py, self.buffers(py));
        self.offsets.clear();
        self.data.clear();
        t
    }

    fn buffers<'py>(&self, py: Python<'py>) -> [Bound<'py, PyAny>; 2] {
        let offsets = if self.offsets.is_empty() {
            vec![0]
        } else {
            self.offsets.clone()
        };
        [
            bytes_of(py, &offsets),
            PyBytes::new_bound(py, &self.data).into_any(),
        ]
    }
}

enum Column {
    Text(Texts),
    Int(Vec<i64>, Vec<bool>), // values (0 where null), valid
    Float(Vec<f64>, Vec<bool>),
    Bool(Vec<bool>),
    Ints(Vec<i32>, Vec<i64>), // list offsets, values
    TextList(Vec<i32>, Texts),
}

/// Each column's name and kind, in `RELATIONSHIP_COLUMNS` order (Python checks the names).
#[rustfmt::skip]
const COLUMNS: [(&str, u8); 36] = [
    ("workspace", b's'), ("contact_id", b's'), ("first_contact_at", b'i'),
    ("last_contact_at", b'i'), ("last_inbound_at", b'i'), ("last_outbound_at", b'i'),
    ("last_platform", b's'), ("interactions", b'i'), ("our_replies", b'i'),
    ("our_latency_p50_s", b'f'), ("our_latency_p90_s", b'f'), ("awaiting_reply_since", b'i'),
    ("their_replies", b'i'), ("their_latency_p50_s", b'f'), ("their_latency_p90_s", b'f'),
    ("gives_out", b'f'), ("asks_out", b'f'), ("gives_in", b'f'), ("asks_in", b'f'),
    ("balance", b'f'), ("reciprocity", b'f'), ("ask_only", b'b'), ("strength", b'f'),
    ("strength_at", b'i'), ("typical_gap_days", b'f'), ("touch_due_at", b'i'),
    ("qualified_conversations", b'i'), ("qualified_at", b'I'), ("stage", b's'),
    ("platforms", b'S'), ("platform_moves", b'i'), ("members", b'S'), ("late_events", b'i'),
    ("policy_version", b's'), ("revision", b'i'), ("updated_at", b'i'),
];

/// The rows so far; a row is pushed value by value in column order (`next` panics on a value of
/// the wrong kind: a bug, not data).
pub struct Rows {
    columns: Vec<Column>,
    at: usize,
    count: usize,
}

impl Default for Rows {
    fn default() -> Self {
        let columns = COLUMNS
            .iter()
            .map(|(_, kind)| match kind {
                b's' => Column::Text(Texts::default()),
                b'i' => Column::Int(Vec::new(), Vec::new()),
                b'f' => Column::Float(Vec::new(), Vec::new()),
                b'b' => Column::Bool(Vec::new()),
                b'I' => Column::Ints(vec![0], Vec::new()),
                _ => Column::TextList(vec![0], Texts::default()),
            })
            .collect();
        Rows {
            columns,
            at: 0,
            count: 0,
        }
    }
}

impl Rows {
    fn next(&mut self) -> &mut Column {
        let n = self.at;
        self.at += 1;
        &mut self.columns[n]
    }

    pub fn text(&mut self, v: &str) {
        let Column::Text(t) = self.next() else {
            unreachable!("not a text column")
        };
        t.push(v);
    }

    pub fn int(&mut self, v: Option<i64>) {
        let Column::Int(values, valid) = self.next() else {
            unreachable!("not an int column")
        };
        values.push(v.unwrap_or(0));
        valid.push(v.is_some());
    }

    pub fn float(&mut self, v: Option<f64>) {
        let Column::Float(values, valid) = self.next() else {
            unreachable!("not a float column")
        };
        values.push(v.unwrap_or(0.0));
        valid.push(v.is_some());
    }

    pub fn bool(&mut self, v: bool) {
        let Column::Bool(values) = self.next() else {
            unreachable!("not a bool column")
        };
        values.push(v);
    }

    pub fn ints(&mut self, v: &[i64]) {
        let Column::Ints(offsets, values) = self.next() else {
            unreachable!("not an int list")
        };
        values.extend_from_slice(v);
        offsets.push(values.len() as i32);
    }

    pub fn texts<'a>(&mut self, v: impl Iterator<Item = &'a str>) {
        let Column::TextList(offsets, child) = self.next() else {
            unreachable!("not a str list")
        };
        for s in v {
            child.push(s);
        }
        offsets.push(child.offsets.len().saturating_sub(1) as i32);
    }

    /// The end of a row (every column had its value).
    pub fn done(&mut self) {
        assert_eq!(self.at, COLUMNS.len(), "a row of {} values", self.at);
        self.at = 0;
        self.count += 1;
    }

    /// (count, [(name, kind, buffers...)]) for `streams.replay.native.relationship_table`.
    pub fn to_python<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let columns = PyList::empty_bound(py);
        for ((name, kind), column) in COLUMNS.iter().zip(&self.columns) {
            let kind = std::str::from_utf8(std::slice::from_ref(kind)).unwrap_or("?");
            let buffers: Vec<Bound<'py, PyAny>> = match column {
                Column::Text(t) => t.buffers(py).into(),
                Column::Int(values, valid) => vec![validity(py, valid), bytes_of(py, values)],
                Column::Float(values, valid) => vec![validity(py, valid), bytes_of(py, values)],
                Column::Bool(values) => vec![PyBytes::new_bound(py, &bits(values)).into_any()],
                Column::Ints(offsets, values) => vec![bytes_of(py, offsets), bytes_of(py, values)],
                Column::TextList(offsets, child) => {
                    let [o, d] = child.buffers(py);
                    vec![bytes_of(py, offsets), o, d]
                }
            };
            let head = [
                PyString::new_bound(py, name).into_any(),
                PyString::new_bound(py, kind).into_any(),
            ];
            let all: Vec<Bound<'py, PyAny>> = head.into_iter().chain(buffers).collect();
            columns.append(PyTuple::new_bound(py, all))?;
        }
        Ok(PyTuple::new_bound(
            py,
            [self.count.into_py(py), columns.into_py(py)],
        ))
    }
}

trait Le: Copy {
    fn le(self, out: &mut Vec<u8>);
}
impl Le for i32 {
    fn le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}
impl Le for i64 {
    fn le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}
impl Le for f64 {
    fn le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

fn bytes_of<'py, T: Le>(py: Python<'py>, values: &[T]) -> Bound<'py, PyAny> {
    let mut out = Vec::with_capacity(values.len() * 8);
    for v in values {
        v.le(&mut out);
    }
    PyBytes::new_bound(py, &out).into_any()
}

/// Booleans as Arrow bits (least significant first).
fn bits(values: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; values.len().div_ceil(8)];
    for (n, v) in values.iter().enumerate() {
        if *v {
            out[n / 8] |= 1 << (n % 8);
        }
    }
    out
}

/// A validity bitmap, or None when nothing is null.
fn validity<'py>(py: Python<'py>, valid: &[bool]) -> Bound<'py, PyAny> {
    if valid.iter().all(|v| *v) {
        py.None().into_bound(py)
    } else {
        PyBytes::new_bound(py, &bits(valid)).into_any()
    }
}
