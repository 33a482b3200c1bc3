//! A relationship replayed from its whole sorted history entirely in native code: the state
//! `projections.relationship.replayed` makes, written straight as the JSON the live worker
//! stores (`RelationshipState.to_json`) and as its `relationships` row (`view_row`), with no
//! Python object in between.
//!
//! The tallies fold with the same float operations in the same order as `crate::fold` and
//! `projections.tally.step`. It takes only what it is sure of, and returns None for the rest
//! (the caller folds those in Python): exact latencies only (not past the sketch limit), finite
//! numbers, weights that are Python floats, and trailing gives and asks that are not negative
//! (then `ask_only` does not depend on how Python sums them).

use crate::columns::Rows;
use crate::decode::{Names, Touch};
use crate::fold::{half_pow, Knobs, DAY_MS};
use crate::json::{self, V};
use pyo3::PyResult;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::io::Write;

#[derive(Clone, Copy)]
struct Day {
    day: i64,
    asks_out: f64,
    gives_out: f64,
    inbound: i64,
    outbound: i64,
}

impl Day {
    fn new(day: i64) -> Self {
        Day {
            day,
            asks_out: 0.0,
            gives_out: 0.0,
            inbound: 0,
            outbound: 0,
        }
    }
}

/// A conversation with an id: its two earliest inbound and outbound turn times.
#[derive(Clone)]
struct Conversation {
    id: u32,
    inbound: Vec<i64>,
    outbound: Vec<i64>,
}

#[derive(Clone, Copy)]
struct Run {
    last_at: i64,
    inbound: i64,
    outbound: i64,
    qualified: bool,
}

/// `projections.tally.Tally`, its strings as `Names` indices and its orders as touch indices.
#[derive(Clone, Default)]
struct Tally {
    count: i64,
    first_at: Option<i64>,
    last_at: Option<i64>,
    last_in_at: Option<i64>,
    last_out_at: Option<i64>,
    last_platform: Option<u32>,
    last_order: Option<usize>, // the index of the touch
    our_open_since: Option<i64>,
    our: Vec<i64>, // in the order added
    their_open_since: Option<i64>,
    their: Vec<i64>,
    gives_out: f64,
    asks_out: f64,
    gives_in: f64,
    asks_in: f64,
    trailing: Vec<Day>,
    strength: f64,
    strength_at: Option<i64>,
    last_conv_day: Option<i64>,
    gaps: BTreeMap<i64, i64>,
    conversations: Vec<Conversation>, // in the order first seen (a Python dict's)
    conversation_at: FxHashMap<u32, usize>,
    run: Option<Run>,
    run_qualified_at: Vec<i64>,
    platforms: Vec<u32>,
    platform_moves: i64,
    last_conv: Option<(i64, u32)>,
    members: Vec<u32>,
}

/// The two earliest of `times` and `at` (a Python dict keeps a key's place when its value
/// changes, so whether it changed does not matter here).
fn earliest_two(times: &mut Vec<i64>, at: i64) {
    times.push(at);
    times.sort_unstable();
    times.truncate(2);
}

impl Tally {
    /// `projections.tally.step` of the next touch in (occurred_at, event_id) order.
    fn step(&mut self, touches: &[Touch], n: usize, weight: f64, ask: bool, k: &Knobs<'_>) {
        let touch = &touches[n];
        let (at, inbound) = (touch.at, touch.inbound);
        match self.strength_at {
            None => {
                self.strength = weight;
                self.strength_at = Some(at);
            }
            Some(since) if at >= since => {
                self.strength =
                    self.strength * half_pow((at - since) as f64 / k.half_life) + weight;
                self.strength_at = Some(at);
            }
            Some(since) => self.strength += weight * half_pow((since - at) as f64 / k.half_life),
        }
        self.count += 1;
        if self.first_at.is_none_or(|f| at < f) {
            self.first_at = Some(at);
        }
        if self.last_at.is_none_or(|l| at > l) {
            self.last_at = Some(at);
        }
        // _trailing, newest = at
        let day = at.div_euclid(DAY_MS);
        let horizon = day - k.trailing_days + 1;
        let trailing = &mut self.trailing;
        let row = match (trailing.first(), trailing.last()) {
            (Some(first), Some(last)) if first.day >= horizon && day >= last.day => {
                if day != last.day {
                    trailing.push(Day::new(day));
                }
                trailing.last_mut()
            }
            _ => {
                trailing.retain(|r| r.day >= horizon);
                if day < horizon {
                    None
                } else {
                    let found = trailing.iter().position(|r| r.day == day);
                    let at = found.unwrap_or_else(|| {
                        let at = trailing.partition_point(|r| r.day < day);
                        trailing.insert(at, Day::new(day));
                        at
                    });
                    trailing.get_mut(at)
                }
            }
        };
        if let Some(r) = row {
            if inbound {
                r.inbound += 1;
            } else if ask {
                r.asks_out += weight;
                r.outbound += 1;
            } else {
                r.gives_out += weight;
                r.outbound += 1;
            }
        }
        // _give_take
        if inbound {
            if ask {
                self.asks_in += weight;
            } else {
                self.gives_in += weight;
            }
            if self.last_in_at.is_none_or(|l| at > l) {
                self.last_in_at = Some(at);
            }
        } else {
            if ask {
                self.asks_out += weight;
            } else {
                self.gives_out += weight;
            }
            if self.last_out_at.is_none_or(|l| at > l) {
                self.last_out_at = Some(at);
            }
        }
        let later = self.last_order.is_none_or(|o| {
            let last = &touches[o];
            (at, &touch.event_id) > (last.at, &last.event_id)
        });
        if later {
            self.last_order = Some(n);
            self.last_platform = Some(touch.platform);
        }
        if !self.platforms.contains(&touch.platform) {
            self.platforms.push(touch.platform);
        }
        if let Some(member) = touch.member {
            if !self.members.contains(&member) {
                self.members.push(member);
            }
        }
        if !touch.conversational {
            return;
        }
        if let Some(cid) = touch.conversation {
            let index = *self.conversation_at.entry(cid).or_insert_with(|| {
                self.conversations.push(Conversation {
                    id: cid,
                    inbound: Vec::new(),
                    outbound: Vec::new(),
                });
                self.conversations.len() - 1
            });
            let c = &mut self.conversations[index];
            earliest_two(
                if inbound {
                    &mut c.inbound
                } else {
                    &mut c.outbound
                },
                at,
            );
        }
        // _waits
        if inbound {
            if self.our_open_since.is_none() {
                self.our_open_since = Some(at);
            }
            if let Some(open) = self.their_open_since.take() {
                self.their.push((at - open).max(0));
            }
        } else {
            if self.their_open_since.is_none() {
                self.their_open_since = Some(at);
            }
            if let Some(open) = self.our_open_since.take() {
                self.our.push((at - open).max(0));
            }
        }
        // _rhythm
        if self.last_conv_day.is_none_or(|d| day > d) {
            if let Some(previous) = self.last_conv_day {
                *self.gaps.entry(day - previous).or_insert(0) += 1;
            }
            self.last_conv_day = Some(day);
        }
        if let Some((previous_at, previous_platform)) = self.last_conv {
            if previous_platform != touch.platform && ((at - previous_at) as f64) <= k.move_ms {
                self.platform_moves += 1;
            }
        }
        self.last_conv = Some((at, touch.platform));
        if touch.conversation.is_none() {
            let mut run = match self.run {
                Some(run) if ((at - run.last_at) as f64) < k.gap_ms => run,
                _ => Run {
                    last_at: at,
                    inbound: 0,
                    outbound: 0,
                    qualified: false,
                },
            };
            run.last_at = at;
            if inbound {
                run.inbound += 1;
            } else {
                run.outbound += 1;
            }
            if !run.qualified && run.inbound >= 2 && run.outbound >= 2 {
                run.qualified = true;
                self.run_qualified_at.push(at);
            }
            self.run = Some(run);
        }
    }

    /// Whether the Python fold would have made the same values, and `view_row` reads them the
    /// same way (see the module docstring).
    fn sure(&self, limit: i64) -> bool {
        let floats = [
            self.gives_out,
            self.asks_out,
            self.gives_in,
            self.asks_in,
            self.strength,
        ];
        self.our.len() as i64 <= limit
            && self.their.len() as i64 <= limit
            && floats.iter().all(|f| f.is_finite())
            && self.trailing.iter().all(|r| {
                r.asks_out.is_finite()
                    && r.gives_out.is_finite()
                    && r.asks_out >= 0.0
                    && r.gives_out >= 0.0
            })
    }

    /// When each conversation and run qualified, ascending (`tally.qualified_times`).
    fn qualified_times(&self) -> Vec<i64> {
        let mut out: Vec<i64> = self
            .conversations
            .iter()
            .filter(|c| c.inbound.len() == 2 && c.outbound.len() == 2)
            .map(|c| c.inbound[1].max(c.outbound[1]))
            .chain(self.run_qualified_at.iter().copied())
            .collect();
        out.sort_unstable();
        out
    }

    /// `tally_to_json`, encoded.
    fn write_json(&self, out: &mut Vec<u8>, touches: &[Touch], names: &Names) {
        out.push(b'{');
        json::key(out, "count");
        json::int(out, self.count);
        for (name, v) in [
            ("first_at", self.first_at),
            ("last_at", self.last_at),
            ("last_in_at", self.last_in_at),
            ("last_out_at", self.last_out_at),
        ] {
            json::key(out, name);
            json::opt_int(out, v);
        }
        json::key(out, "last_platform");
        json::opt_string(out, self.last_platform.map(|p| names.text(p)));
        json::key(out, "last_order");
        match self.last_order {
            Some(n) => pair(out, touches[n].at, &touches[n].event_id),
            None => out.extend_from_slice(b"null"),
        }
        for (open_name, open, name, values) in [
            ("our_open_since", self.our_open_since, "our", &self.our),
            (
                "their_open_since",
                self.their_open_since,
                "their",
                &self.their,
            ),
        ] {
            json::key(out, open_name);
            json::opt_int(out, open);
            json::key(out, name);
            json::ints(out, &sorted(values));
        }
        for (name, v) in [
            ("gives_out", self.gives_out),
            ("asks_out", self.asks_out),
            ("gives_in", self.gives_in),
            ("asks_in", self.asks_in),
        ] {
            json::key(out, name);
            json::float(out, v);
        }
        json::key(out, "trailing");
        json::array(out, &self.trailing, |out, r| {
            json::tuple(
                out,
                &[
                    V::Int(r.day),
                    V::Float(r.asks_out),
                    V::Float(r.gives_out),
                    V::Int(r.inbound),
                    V::Int(r.outbound),
                ],
            )
        });
        json::key(out, "strength");
        json::float(out, self.strength);
        json::key(out, "strength_at");
        json::opt_int(out, self.strength_at);
        json::key(out, "last_conv_day");
        json::opt_int(out, self.last_conv_day);
        json::key(out, "gaps");
        json::array(out, &self.gaps, |out, (gap, count)| {
            json::ints(out, &[*gap, *count])
        });
        json::key(out, "conversations");
        out.push(b'{');
        for (n, c) in self.conversations.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            json::string(out, names.text(c.id));
            out.extend_from_slice(b":[");
            json::ints(out, &c.inbound);
            out.push(b',');
            json::ints(out, &c.outbound);
            out.push(b']');
        }
        out.push(b'}');
        json::key(out, "run");
        match self.run {
            Some(r) => {
                let values = [
                    V::Int(r.last_at),
                    V::Int(r.inbound),
                    V::Int(r.outbound),
                    V::Bool(r.qualified),
                ];
                json::tuple(out, &values);
            }
            None => out.extend_from_slice(b"null"),
        }
        json::key(out, "run_qualified_at");
        json::ints(out, &self.run_qualified_at);
        json::key(out, "platforms");
        json::strings(out, &sorted_names(&self.platforms, names));
        json::key(out, "platform_moves");
        json::int(out, self.platform_moves);
        json::key(out, "last_conv");
        match self.last_conv {
            Some((at, platform)) => pair(out, at, names.text(platform)),
            None => out.extend_from_slice(b"null"),
        }
        json::key(out, "members");
        json::strings(out, &sorted_names(&self.members, names));
        json::key(out, "late");
        json::int(out, 0);
        out.push(b'}');
    }
}

fn pair(out: &mut Vec<u8>, at: i64, text: &str) {
    json::tuple(out, &[V::Int(at), V::Str(text)]);
}

fn sorted(values: &[i64]) -> Vec<i64> {
    let mut out = values.to_vec();
    out.sort_unstable();
    out
}

/// The strings, sorted as Python sorts `str` (by code point, which is UTF-8's byte order).
fn sorted_names<'a>(values: &[u32], names: &'a Names) -> Vec<&'a str> {
    let mut out: Vec<&str> = values.iter().map(|n| names.text(*n)).collect();
    out.sort_unstable();
    out
}

/// `Latencies.percentile_s` of exact, ascending values.
fn percentile_s(ascending: &[i64], p: f64) -> Option<f64> {
    if ascending.is_empty() {
        return None;
    }
    let rank = ((p * ascending.len() as f64).ceil() as usize).max(1);
    Some(ascending[rank - 1] as f64 / 1000.0)
}

/// `statistics.median` of each gap repeated its count times, as a float.
fn median_gap(gaps: &BTreeMap<i64, i64>) -> Option<f64> {
    let n: i64 = gaps.values().sum();
    if n == 0 {
        return None;
    }
    let nth = |i: i64| -> i64 {
        let mut seen = 0;
        for (gap, count) in gaps {
            seen += count;
            if seen > i {
                return *gap;
            }
        }
        unreachable!("the index is below the count")
    };
    Some(if n % 2 == 1 {
        nth(n / 2) as f64
    } else {
        (nth(n / 2 - 1) + nth(n / 2)) as f64 / 2.0
    })
}

/// What the replay of one relationship needs of a workspace beyond the fold's knobs.
pub struct Reading {
    pub limit: i64,
    pub cadence_qualified_ms: i64,
    pub cadence_default_ms: i64,
    pub version: String,
}

/// `replayed(...)` of sorted touches whose ids are all `event_id`'s (`prints` their
/// fingerprints, unique): the stored JSON appended to `json_out` and the row pushed to `rows`;
/// false (nothing written) when the Python fold must take it. `weight(touch)` is the touch's
/// weight (None: not a Python float).
#[allow(clippy::too_many_arguments)]
pub fn replay(
    workspace: &str,
    contact: &str,
    touches: &[Touch],
    prints: &[u64],
    names: &Names,
    knobs: &Knobs<'_>,
    reading: &Reading,
    weight: &mut dyn FnMut(&Touch) -> PyResult<Option<f64>>,
    json_out: &mut Vec<u8>,
    rows: &mut Rows,
) -> PyResult<bool> {
    let newest = touches[touches.len() - 1].at;
    let cut = newest - knobs.lateness_ms;
    let settled_upto = touches.partition_point(|t| t.at < cut) as i64;
    let keep = settled_upto
        .max(touches.len() as i64 - knobs.lateness_touches)
        .max(0) as usize;
    let mut settled = Tally::default();
    let mut view: Option<Tally> = None;
    for n in 0..touches.len() {
        if n == keep {
            view = Some(settled.clone());
        }
        let Some(w) = weight(&touches[n])? else {
            return Ok(false);
        };
        let ask = names.text(touches[n].intent) == "ask";
        match view.as_mut() {
            Some(v) => v.step(touches, n, w, ask, knobs),
            None => settled.step(touches, n, w, ask, knobs),
        }
    }
    let view = view.unwrap_or_else(|| settled.clone());
    if !settled.sure(reading.limit) || !view.sure(reading.limit) {
        return Ok(false);
    }
    write_state(
        json_out, workspace, contact, touches, keep, prints, names, &settled, &view,
    );
    write_row(
        rows,
        workspace,
        contact,
        touches.len(),
        names,
        reading,
        &view,
    );
    Ok(true)
}

#[allow(clippy::too_many_arguments)]
fn write_state(
    out: &mut Vec<u8>,
    workspace: &str,
    contact: &str,
    touches: &[Touch],
    keep: usize,
    prints: &[u64],
    names: &Names,
    settled: &Tally,
    view: &Tally,
) {
    out.push(b'{');
    json::key(out, "workspace");
    json::string(out, workspace);
    json::key(out, "contact_id");
    json::string(out, contact);
    json::key(out, "settled");
    settled.write_json(out, touches, names);
    json::key(out, "timeline");
    json::array(out, &touches[keep..], |out, t| {
        let values = [
            V::Int(t.at),
            V::Str(&t.event_id),
            V::Bool(t.inbound),
            V::Str(names.text(t.kind)),
            V::Bool(t.conversational),
            V::Str(names.text(t.intent)),
            V::Str(names.text(t.platform)),
            V::OptStr(t.conversation.map(|c| names.text(c))),
            V::OptStr(t.member.map(|m| names.text(m))),
        ];
        json::tuple(out, &values);
    });
    json::key(out, "view");
    view.write_json(out, touches, names);
    json::key(out, "newest");
    json::int(out, touches[touches.len() - 1].at);
    json::key(out, "seen");
    let mut ascending = prints.to_vec();
    ascending.sort_unstable();
    out.push(b'"');
    for p in ascending {
        write!(out, "{p:016x}").expect("writing to a Vec cannot fail");
    }
    out.push(b'"');
    json::key(out, "revision");
    json::int(out, touches.len() as i64);
    json::key(out, "horizon");
    if keep > 0 {
        pair(out, touches[keep - 1].at, &touches[keep - 1].event_id);
    } else {
        out.extend_from_slice(b"null");
    }
    out.push(b'}');
}

/// `relationship_values(view_row(state, policy), 0)` (SPEC section 3).
fn write_row(
    rows: &mut Rows,
    workspace: &str,
    contact: &str,
    revision: usize,
    names: &Names,
    reading: &Reading,
    v: &Tally,
) {
    let top = if v.gives_in > v.gives_out {
        v.gives_in
    } else {
        v.gives_out
    };
    let low = if v.gives_in < v.gives_out {
        v.gives_in
    } else {
        v.gives_out
    };
    let reciprocity = if top == 0.0 { None } else { Some(low / top) };
    // Not negative (`sure`): a sum is above 0 when any is, 0 when all are.
    let asks_recent = v.trailing.iter().any(|r| r.asks_out > 0.0);
    let no_gives_recent = v.trailing.iter().all(|r| r.gives_out == 0.0);
    let inbound_recent: i64 = v.trailing.iter().map(|r| r.inbound).sum();
    let outbound_recent: i64 = v.trailing.iter().map(|r| r.outbound).sum();
    let qualified_at = v.qualified_times();
    let qualified = qualified_at.len() as i64;
    let stage = if qualified >= 3
        || (reciprocity.is_some_and(|r| r >= 0.5) && inbound_recent != 0 && outbound_recent != 0)
    {
        "audience"
    } else if qualified >= 1 {
        "affinity"
    } else if v.last_in_at.is_some() {
        "attraction"
    } else {
        "attention"
    };
    let (our, their) = (sorted(&v.our), sorted(&v.their));
    rows.text(workspace);
    rows.text(contact);
    rows.int(v.first_at);
    rows.int(v.last_at);
    rows.int(v.last_in_at);
    rows.int(v.last_out_at);
    rows.text(v.last_platform.map_or("", |p| names.text(p)));
    rows.int(Some(v.count));
    rows.int(Some(our.len() as i64));
    rows.float(percentile_s(&our, 0.5));
    rows.float(percentile_s(&our, 0.9));
    rows.int(v.our_open_since);
    rows.int(Some(their.len() as i64));
    rows.float(percentile_s(&their, 0.5));
    rows.float(percentile_s(&their, 0.9));
    rows.float(Some(v.gives_out));
    rows.float(Some(v.asks_out));
    rows.float(Some(v.gives_in));
    rows.float(Some(v.asks_in));
    rows.float(Some(v.gives_out - v.asks_out));
    rows.float(reciprocity);
    rows.bool(asks_recent && no_gives_recent);
    rows.float(Some(v.strength));
    rows.int(v.strength_at);
    rows.float(median_gap(&v.gaps));
    let cadence = if qualified >= 1 {
        reading.cadence_qualified_ms
    } else {
        reading.cadence_default_ms
    };
    rows.int(v.last_at.map(|at| at + cadence));
    rows.int(Some(qualified));
    rows.ints(&qualified_at);
    rows.text(stage);
    rows.texts(sorted_names(&v.platforms, names).into_iter());
    rows.int(Some(v.platform_moves));
    rows.texts(sorted_names(&v.members, names).into_iter());
    rows.int(Some(0));
    rows.text(&reading.version);
    rows.int(Some(revision as i64));
    rows.int(Some(0)); // updated_at: the writer stamps it
    rows.done();
}
