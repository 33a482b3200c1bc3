//! The replay's hot path in native code: logged events (JSON) straight into touches kept in
//! Rust and the interaction rows' Arrow columns, with no Python object per field; then, once the
//! identity map is known, the touches grouped by relationship and each relationship replayed
//! (`projections.relationship.replayed`) into its stored JSON and its row (`crate::relationship`).
//!
//! It takes only the events it is sure of: current-version interactions whose every field it
//! reads has the exact form `streams.replay.recalculation` decodes with msgspec (complete, plain
//! RFC 3339 times with an offset). Anything else it hands back untouched, and the Python decoder
//! (the reference) takes it, so what it accepts gives the same touches and rows as the Python
//! path (tested on both, field for field) and what it refuses goes the Python way unchanged.
//! Likewise a relationship it is not sure of goes to the Python `replayed`.

use crate::columns::{self, Texts};
use crate::fold::{fields_of, Knobs};
use crate::relationship::{self, Reading};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashSet;

#[derive(Deserialize)]
struct Party<'a> {
    #[serde(borrow)]
    platform: Cow<'a, str>,
    #[serde(borrow)]
    user_id: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Pointer {
    partition: i64,
    offset: i64,
}

fn neutral() -> Cow<'static, str> {
    Cow::Borrowed("neutral")
}

/// The fields of `_Doc` (streams/replay/recalculation.py), with its defaults; a JSON null where
/// `_Doc` has a plain `str` fails here as it fails there.
#[derive(Deserialize)]
struct Doc<'a> {
    #[serde(rename = "type", borrow)]
    type_: Cow<'a, str>,
    #[serde(default)]
    schema_version: i64,
    #[serde(default, borrow)]
    event_id: Cow<'a, str>,
    #[serde(default, borrow)]
    workspace: Cow<'a, str>,
    #[serde(default, borrow)]
    occurred_at: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    received_at: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    platform: Cow<'a, str>,
    #[serde(default, borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    direction: Cow<'a, str>,
    #[serde(default, borrow)]
    actor: Option<Party<'a>>,
    #[serde(default, borrow)]
    subject: Option<Party<'a>>,
    #[serde(default, borrow)]
    contact: Option<Party<'a>>,
    #[serde(default, borrow)]
    account: Option<Party<'a>>,
    #[serde(default, borrow)]
    member: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    conversation_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    object_id: Cow<'a, str>,
    #[serde(default, borrow)]
    in_reply_to: Option<Cow<'a, str>>,
    #[serde(default = "neutral", borrow)]
    intent: Cow<'a, str>,
    #[serde(default)]
    raw: Option<Pointer>,
}

fn digits(s: &[u8]) -> Option<i64> {
    let mut n: i64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(c - b'0');
    }
    Some(n)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Howard Hinnant's algorithm: days since 1970-01-01 of a proleptic Gregorian date.
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn month_days(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Microseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)`, or None
/// for any other form (the Python decoder takes those). Kept to years 1900-2200, where the
/// microseconds are exact in a double, as Python's `timestamp()` needs them.
fn micros_of(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (h, mi, se) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1900..=2200).contains(&y) || !(1..=12).contains(&mo) || d < 1 || d > month_days(y, mo) {
        return None;
    }
    if h > 23 || mi > 59 || se > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut fraction: i64 = 0;
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 6 {
            return None;
        }
        fraction = digits(&rest[1..1 + n])? * 10_i64.pow(6 - n as u32);
        rest = &rest[1 + n..];
    }
    let offset = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let seconds = oh * 3600 + om * 60;
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None,
    };
    let seconds = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    Some(seconds * 1_000_000 + fraction)
}

/// `events.models.epoch_ms` of a datetime `micros` after the epoch, with the same float steps:
/// `timestamp()` (the microseconds over 10**6, rounded once) then `int(s * 1000 ± 0.5)`.
fn epoch_ms(micros: i64) -> i64 {
    let seconds = micros as f64 / 1e6;
    let half = if seconds >= 0.0 { 0.5 } else { -0.5 };
    (seconds * 1000.0 + half).trunc() as i64
}

/// A 32-digit lowercase hex id (what `events.ids.event_id` makes) as its 128 bits.
fn hex_id(id: &str) -> Option<u128> {
    let b = id.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let mut v: u128 = 0;
    for &c in b {
        let n = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(n);
    }
    Some(v)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in bytes {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const STRING_COLUMNS: usize = 14;
const NUMBER_COLUMNS: usize = 5;

/// The interaction rows of `INTERACTION_COLUMNS`, column by column (Arrow's own layout: an
/// int32 offset per string and the bytes; int64 numbers), little-endian.
#[derive(Default)]
struct Rows {
    count: usize,
    strings: [Texts; STRING_COLUMNS],
    numbers: [Vec<i64>; NUMBER_COLUMNS],
}

/// The strings the touches share (kind, intent, platform, member, conversation): each kept
/// once, as an index, with its interned Python string made once.
#[derive(Default)]
pub(crate) struct Names {
    index: FxHashMap<String, u32>,
    strings: Vec<Py<PyString>>,
    texts: Vec<Box<str>>,
}

impl Names {
    fn of(&mut self, py: Python<'_>, s: &str) -> u32 {
        if let Some(found) = self.index.get(s) {
            return *found;
        }
        let n = self.strings.len() as u32;
        self.strings.push(PyString::intern_bound(py, s).unbind());
        self.texts.push(s.into());
        self.index.insert(s.to_owned(), n);
        n
    }

    pub(crate) fn text(&self, n: u32) -> &str {
        &self.texts[n as usize]
    }

    fn get<'py>(&self, py: Python<'py>, n: u32) -> Bound<'py, PyString> {
        self.strings[n as usize].bind(py).clone()
    }

    fn optional<'py>(&self, py: Python<'py>, n: Option<u32>) -> Bound<'py, PyAny> {
        n.map_or_else(|| py.None().into_bound(py), |n| self.get(py, n).into_any())
    }
}

/// A touch as the decoder keeps it until the fold: no Python object, the strings by index.
pub(crate) struct Touch {
    pub(crate) at: i64,
    pub(crate) event_id: Box<str>,
    pub(crate) inbound: bool,
    pub(crate) conversational: bool,
    pub(crate) kind: u32,
    pub(crate) intent: u32,
    pub(crate) platform: u32,
    pub(crate) conversation: Option<u32>,
    pub(crate) member: Option<u32>,
}

/// What `Recalculation` keeps of the events it decodes natively: the ids it has seen, each
/// identity's touches, the interaction rows not yet taken, and its counts.
#[pyclass(module = "rapport_native")]
pub struct Decoder {
    only: Option<HashSet<String>>,
    conversational: HashSet<String>,
    touch: PyObject,
    seen_hex: FxHashSet<u128>,
    seen_other: FxHashSet<String>,
    // "<workspace>\0<identity>" -> its touches (one key, looked up without allocating)
    buckets: FxHashMap<Box<str>, Vec<Touch>>,
    // (workspace, contact) -> its touches, once `group` resolved the identities
    groups: FxHashMap<(String, String), Vec<Touch>>,
    key: String,
    rows: Rows,
    names: Names,
    #[pyo3(get)]
    events: u64,
    #[pyo3(get)]
    interactions: u64,
    #[pyo3(get)]
    duplicates: u64,
}

enum Taken {
    Done,
    Refused,
}

impl Decoder {
    fn first(&mut self, event_id: &str) -> bool {
        match hex_id(event_id) {
            Some(v) => self.seen_hex.insert(v),
            None => {
                if self.seen_other.contains(event_id) {
                    false
                } else {
                    self.seen_other.insert(event_id.to_owned());
                    true
                }
            }
        }
    }

    fn take_one(&mut self, py: Python<'_>, value: &[u8]) -> PyResult<Taken> {
        let Ok(d) = sonic_rs::from_slice::<Doc>(value) else {
            return Ok(Taken::Refused);
        };
        let complete = d.type_ == "interaction"
            && d.schema_version == 1
            && !d.event_id.is_empty()
            && !d.workspace.is_empty()
            && !d.workspace.contains('\0')
            && !d.platform.is_empty()
            && !d.kind.is_empty()
            && !d.direction.is_empty()
            && !d.object_id.is_empty()
            && d.actor.is_some();
        if !complete {
            return Ok(Taken::Refused);
        }
        let (Some(occurred), Some(received)) = (&d.occurred_at, &d.received_at) else {
            return Ok(Taken::Refused);
        };
        let (Some(occurred), Some(received)) = (micros_of(occurred), micros_of(received)) else {
            return Ok(Taken::Refused);
        };
        self.events += 1;
        if let Some(only) = &self.only {
            if !only.contains(d.workspace.as_ref()) {
                return Ok(Taken::Done);
            }
        }
        if !self.first(&d.event_id) {
            self.duplicates += 1;
            return Ok(Taken::Done);
        }
        self.interactions += 1;
        let at = epoch_ms(occurred);
        let received_ms = if received == occurred {
            at
        } else {
            epoch_ms(received)
        };
        let inbound = d.direction == "inbound";
        let mut identity = String::new();
        if let Some(contact) = &d.contact {
            if inbound || d.direction == "outbound" {
                identity = format!("{}:{}", contact.platform, contact.user_id);
                self.touch_of(py, &d, at, inbound, &identity)?;
            }
        }
        self.row_of(&d, &identity, at, received_ms);
        Ok(Taken::Done)
    }

    fn touch_of(
        &mut self,
        py: Python<'_>,
        d: &Doc,
        at: i64,
        inbound: bool,
        identity: &str,
    ) -> PyResult<()> {
        let touch = Touch {
            at,
            event_id: d.event_id.as_ref().into(),
            inbound,
            conversational: self.conversational.contains(d.kind.as_ref()),
            kind: self.names.of(py, &d.kind),
            intent: self.names.of(py, &d.intent),
            platform: self.names.of(py, &d.platform),
            conversation: d.conversation_id.as_deref().map(|c| self.names.of(py, c)),
            member: d.member.as_deref().map(|m| self.names.of(py, m)),
        };
        self.key.clear();
        self.key.push_str(&d.workspace);
        self.key.push('\0');
        self.key.push_str(identity);
        match self.buckets.get_mut(self.key.as_str()) {
            Some(list) => list.push(touch),
            None => {
                self.buckets.insert(self.key.as_str().into(), vec![touch]);
            }
        }
        Ok(())
    }

    /// A touch as the Python `Touch` the fold and the timeline take.
    fn py_touch<'py>(&self, py: Python<'py>, t: &Touch) -> PyResult<Bound<'py, PyAny>> {
        let args = PyTuple::new_bound(
            py,
            [
                t.at.into_py(py),
                PyString::new_bound(py, &t.event_id).into_any().unbind(),
                t.inbound.into_py(py),
                self.names.get(py, t.kind).into_any().unbind(),
                t.conversational.into_py(py),
                self.names.get(py, t.intent).into_any().unbind(),
                self.names.get(py, t.platform).into_any().unbind(),
                self.names.optional(py, t.conversation).unbind(),
                self.names.optional(py, t.member).unbind(),
            ],
        );
        self.touch.bind(py).call1(args)
    }

    fn py_touches<'py>(&self, py: Python<'py>, touches: &[Touch]) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty_bound(py);
        for t in touches {
            list.append(self.py_touch(py, t)?)?;
        }
        Ok(list)
    }

    fn row_of(&mut self, d: &Doc, contact_id: &str, at: i64, received: i64) {
        fn party<'b>(p: &'b Option<Party>) -> &'b str {
            p.as_ref().map_or("", |p| p.user_id.as_ref())
        }
        fn text<'b>(s: &'b Option<Cow<str>>) -> &'b str {
            s.as_deref().unwrap_or("")
        }
        let values: [&str; STRING_COLUMNS] = [
            &d.event_id,
            &d.workspace,
            contact_id,
            &d.platform,
            &d.kind,
            &d.direction,
            &d.intent,
            party(&d.actor),
            party(&d.subject),
            party(&d.account),
            text(&d.member),
            text(&d.conversation_id),
            &d.object_id,
            text(&d.in_reply_to),
        ];
        for (column, value) in self.rows.strings.iter_mut().zip(values) {
            column.push(value);
        }
        let (partition, offset) = d.raw.as_ref().map_or((-1, -1), |r| (r.partition, r.offset));
        for (column, value) in self
            .rows
            .numbers
            .iter_mut()
            .zip([at, received, partition, offset, 1])
        {
            column.push(value);
        }
        self.rows.count += 1;
    }
}

/// What the native replay reads of a workspace's policy, once, and its weights so far.
struct Workspace<'py> {
    knobs: Knobs<'py>,
    weights: FxHashMap<(bool, u32, u32), Option<f64>>,
    reading: Reading,
}

impl<'py> Workspace<'py> {
    fn of(policy: &Bound<'py, PyAny>) -> PyResult<Self> {
        let py = policy.py();
        let cadence = intern!(py, "cadence_ms");
        Ok(Workspace {
            knobs: Knobs::of(policy)?,
            weights: FxHashMap::default(),
            reading: Reading {
                limit: policy.getattr(intern!(py, "exact_latencies"))?.extract()?,
                cadence_qualified_ms: policy.call_method1(cadence, (true,))?.extract()?,
                cadence_default_ms: policy.call_method1(cadence, (false,))?.extract()?,
                version: policy.getattr(intern!(py, "version"))?.extract()?,
            },
        })
    }
}

/// The touches' fingerprints (`projections.seen.fingerprint`), when every id is one
/// `events.ids.event_id` makes and no two share a fingerprint; else None (the Python fold
/// takes the relationship).
fn unique_prints(touches: &[Touch]) -> Option<Vec<u64>> {
    let mut prints: Vec<u64> = Vec::with_capacity(touches.len());
    for t in touches {
        prints.push((hex_id(&t.event_id)? >> 64) as u64);
    }
    let mut unique = prints.clone();
    unique.sort_unstable();
    unique.dedup();
    (unique.len() == prints.len()).then_some(prints)
}

#[pymethods]
impl Decoder {
    #[new]
    #[pyo3(signature = (touch, conversational, only=None))]
    fn new(
        touch: PyObject,
        conversational: HashSet<String>,
        only: Option<HashSet<String>>,
    ) -> Self {
        Decoder {
            only,
            conversational,
            touch,
            seen_hex: FxHashSet::default(),
            seen_other: FxHashSet::default(),
            buckets: FxHashMap::default(),
            groups: FxHashMap::default(),
            key: String::new(),
            rows: Rows::default(),
            names: Names::default(),
            events: 0,
            interactions: 0,
            duplicates: 0,
        }
    }

    /// Decode the (key, value) records from `start` on, up to the first one it refuses;
    /// returns that one's index (the Python decoder takes it, then calls again from the next
    /// one, so the events are counted in log order), or the batch's length.
    fn add_records(
        &mut self,
        py: Python<'_>,
        records: &Bound<'_, PyList>,
        start: usize,
    ) -> PyResult<usize> {
        let count = records.len();
        for index in start..count {
            let record = records.get_item(index)?;
            let value = record.downcast::<PyTuple>()?.get_item(1)?;
            let bytes = value.downcast::<PyBytes>()?;
            if let Taken::Refused = self.take_one(py, bytes.as_bytes())? {
                return Ok(index);
            }
        }
        Ok(count)
    }

    /// Whether `event_id` is new (and from now on seen): the Python decoder's events are
    /// counted once against the same set.
    fn first_seen(&mut self, event_id: &str) -> bool {
        self.first(event_id)
    }

    /// The rows decoded since the last call: (count, [(offsets, data)] * 14 string columns,
    /// [int64 bytes] * 5 number columns), in `INTERACTION_COLUMNS` order less the numbers.
    fn take_rows<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let count = self.rows.count;
        let strings: Vec<Bound<'py, PyTuple>> =
            self.rows.strings.iter_mut().map(|c| c.take(py)).collect();
        let numbers: Vec<Bound<'py, PyBytes>> = self
            .rows
            .numbers
            .iter_mut()
            .map(|c| {
                let bytes: Vec<u8> = c.iter().flat_map(|v| v.to_le_bytes()).collect();
                c.clear();
                PyBytes::new_bound(py, &bytes)
            })
            .collect();
        self.rows.count = 0;
        Ok(PyTuple::new_bound(
            py,
            [
                count.into_py(py),
                PyList::new_bound(py, strings).into_any().unbind(),
                PyList::new_bound(py, numbers).into_any().unbind(),
            ],
        ))
    }

    /// Each (workspace, identity)'s touches as Python `Touch` lists, handed over once (the
    /// decoder forgets them).
    fn take_touches<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new_bound(py);
        for (key, touches) in std::mem::take(&mut self.buckets) {
            let (workspace, identity) = key.split_once('\0').unwrap_or((&key, ""));
            out.set_item((workspace, identity), self.py_touches(py, &touches)?)?;
        }
        Ok(out)
    }

    /// Python `Touch`es of an identity (read by the Python decoder) joined to its own.
    fn add_touches(
        &mut self,
        py: Python<'_>,
        workspace: &str,
        identity: &str,
        touches: &Bound<'_, PyList>,
    ) -> PyResult<()> {
        let mut made = Vec::with_capacity(touches.len());
        for touch in touches.iter() {
            let f = fields_of(py, &touch)?;
            let optional = |names: &mut Names, v: &Bound<'_, PyAny>| -> PyResult<Option<u32>> {
                if v.is_none() {
                    Ok(None)
                } else {
                    Ok(Some(names.of(py, v.downcast::<PyString>()?.to_str()?)))
                }
            };
            made.push(Touch {
                at: f.at,
                event_id: f.event_id.to_str()?.into(),
                inbound: f.inbound,
                conversational: f.conversational,
                kind: self.names.of(py, f.kind.to_str()?),
                intent: self.names.of(py, f.intent.to_str()?),
                platform: self
                    .names
                    .of(py, f.platform.downcast::<PyString>()?.to_str()?),
                conversation: optional(&mut self.names, &f.conversation_id)?,
                member: optional(&mut self.names, &f.member)?,
            });
        }
        let key: Box<str> = format!("{workspace}\0{identity}").into();
        self.buckets.entry(key).or_default().extend(made);
        Ok(())
    }

    /// The touches grouped by relationship, each identity's under the contact `contacts`
    /// ((workspace, identity) -> contact) resolves it to (itself when absent).
    fn group(&mut self, contacts: &Bound<'_, PyDict>) -> PyResult<()> {
        for (key, touches) in std::mem::take(&mut self.buckets) {
            let (workspace, identity) = key.split_once('\0').unwrap_or((&key, ""));
            let contact = match contacts.get_item((workspace, identity))? {
                Some(c) => c.extract::<String>()?,
                None => identity.to_owned(),
            };
            let group = self
                .groups
                .entry((workspace.to_owned(), contact))
                .or_default();
            group.extend(touches);
        }
        Ok(())
    }

    /// The grouped touches of these relationships ((workspace, contact) pairs), as lists of
    /// Python `Touch` lists by relationship; they leave the decoder.
    fn take_groups<'py>(
        &mut self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new_bound(py);
        for key in keys.iter()? {
            let (workspace, contact): (String, String) = key?.extract()?;
            if let Some(touches) = self.groups.remove(&(workspace.clone(), contact.clone())) {
                let lists = PyList::new_bound(py, [self.py_touches(py, &touches)?]);
                out.set_item((workspace, contact), lists)?;
            }
        }
        Ok(out)
    }

    /// Every grouped relationship replayed (`projections.relationship.replayed`), in native
    /// code where it can (`crate::relationship`), else by `fallback(workspace, contact,
    /// touches)` (a `RelationshipState`). Each 500 relationships go to `emit(states, changelog,
    /// touches)`: the fallback's (workspace, contact, state)s, the native ones' table records
    /// (key, stored JSON), and how many touches they folded. Returns the native ones'
    /// `relationships` rows (`crate::columns::Rows::to_python`). Consumes the groups.
    fn replay<'py>(
        &mut self,
        py: Python<'py>,
        policy_of: &Bound<'py, PyAny>,
        fallback: &Bound<'py, PyAny>,
        emit: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let mut groups = std::mem::take(&mut self.groups);
        let mut workspaces: FxHashMap<String, Workspace<'py>> = FxHashMap::default();
        let mut keys: Vec<(String, String)> = groups.keys().cloned().collect();
        keys.sort_unstable(); // the same order whatever the hashing
        let mut rows = columns::Rows::default();
        let mut states = PyList::empty_bound(py);
        let mut changelog = PyList::empty_bound(py);
        let (mut batch, mut folded) = (0usize, 0usize);
        let mut stored: Vec<u8> = Vec::new();
        for key in keys {
            let mut touches = groups.remove(&key).unwrap_or_default();
            let (workspace, contact) = (&key.0, &key.1);
            touches.sort_unstable_by(|a, b| (a.at, &a.event_id).cmp(&(b.at, &b.event_id)));
            if !workspaces.contains_key(workspace) {
                let read = Workspace::of(&policy_of.call1((workspace,))?)?;
                workspaces.insert(workspace.clone(), read);
            }
            let place = workspaces.get_mut(workspace).expect("inserted above");
            stored.clear();
            let native = match unique_prints(&touches) {
                Some(prints) => {
                    let names = &self.names;
                    let (knobs, weights) = (&place.knobs, &mut place.weights);
                    let mut weight = |t: &Touch| -> PyResult<Option<f64>> {
                        let key = (t.inbound, t.kind, t.intent);
                        if let Some(w) = weights.get(&key) {
                            return Ok(*w);
                        }
                        let direction = if t.inbound { "inbound" } else { "outbound" };
                        let found = knobs.weight_of.call1((
                            direction,
                            names.get(py, t.kind),
                            names.get(py, t.intent),
                        ))?;
                        let w = found.downcast_exact::<PyFloat>().ok().map(|f| f.value());
                        weights.insert(key, w);
                        Ok(w)
                    };
                    relationship::replay(
                        workspace,
                        contact,
                        &touches,
                        &prints,
                        names,
                        knobs,
                        &place.reading,
                        &mut weight,
                        &mut stored,
                        &mut rows,
                    )?
                }
                None => false,
            };
            if native {
                let record = (
                    PyBytes::new_bound(py, format!("{workspace}|{contact}").as_bytes()),
                    PyBytes::new_bound(py, &stored),
                );
                changelog.append(record)?;
            } else {
                let state = fallback.call1((workspace, contact, self.py_touches(py, &touches)?))?;
                states.append((workspace, contact, state))?;
            }
            batch += 1;
            folded += touches.len();
            if batch >= 500 {
                emit.call1((states, changelog, folded))?;
                states = PyList::empty_bound(py);
                changelog = PyList::empty_bound(py);
                (batch, folded) = (0, 0);
            }
        }
        if batch > 0 {
            emit.call1((states, changelog, folded))?;
        }
        rows.to_python(py)
    }

    /// The identities holding touches, as (workspace, identity).
    fn identities(&self) -> Vec<(&str, &str)> {
        self.buckets
            .keys()
            .map(|k| k.split_once('\0').unwrap_or((k, "")))
            .collect()
    }

    /// How many touches are held.
    fn touches(&self) -> usize {
        self.buckets.values().map(Vec::len).sum()
    }

    /// A 64-bit hash of every id seen (int64, little-endian bytes), the same for the same id
    /// in every process: what tells two shards' events apart.
    fn id_hashes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let mut out = Vec::with_capacity(8 * (self.seen_hex.len() + self.seen_other.len()));
        for v in &self.seen_hex {
            out.extend_from_slice(&(((v >> 64) as u64) ^ (*v as u64)).to_le_bytes());
        }
        for s in &self.seen_other {
            out.extend_from_slice(&fnv1a(s.as_bytes()).to_le_bytes());
        }
        PyBytes::new_bound(py, &out)
    }
}

/// `epoch_ms` of an RFC 3339 time in the native decoder's form (None for any other): tests
/// check it against the Python conversion.
#[pyfunction]
pub fn epoch_ms_of(text: &str) -> Option<i64> {
    micros_of(text).map(epoch_ms)
}
