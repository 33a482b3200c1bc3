//! `projections.in_order.fold_in_order` in native code: a whole sorted history folded into one
//! `Tally`, with the same float operations in the same order (so the same bits), the running
//! aggregates in Rust locals instead of Python ones.
//!
//! It reads the starting tally's fields and each touch's attributes, and builds the result with
//! the Python classes (`Tally`, `Run`) and the latencies' own `add_many`, so the objects are the
//! ones the Python fold makes. Where the starting tally holds a value of a type the Python fold
//! would carry through unchanged but this one would convert (an int where a float is kept), it
//! returns None and the caller folds in Python.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyFrozenSet, PyList, PyLong, PyString, PyTuple};
use pyo3::{intern, IntoPy};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;

pub const DAY_MS: i64 = 86_400_000;

/// `0.5 ** x` as Python computes it: libm's `pow(0.5, x)`. The base is hidden from the
/// optimiser, which would otherwise rewrite a power of two into `exp2(-x)`, a different
/// rounding in the last bit.
pub fn half_pow(x: f64) -> f64 {
    std::hint::black_box(0.5_f64).powf(x)
}

/// The starting tally's float field `name`, or None when it is not a Python float.
fn float_of(t: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<Option<f64>> {
    let value = t.getattr(name)?;
    Ok(value.downcast_exact::<PyFloat>().ok().map(|f| f.value()))
}

fn int_or_none(value: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
    if value.is_none() {
        Ok(None)
    } else {
        Ok(Some(value.extract::<i64>()?))
    }
}

struct Row {
    day: i64,
    asks_out: f64,
    gives_out: f64,
    inbound: i64,
    outbound: i64,
}

/// A trailing row read back, or None when its numbers are not of the types the fold keeps.
fn row_of(item: &Bound<'_, PyAny>) -> PyResult<Option<Row>> {
    let row = item.downcast::<PyTuple>()?;
    if row.len() != 5 {
        return Ok(None);
    }
    let floats = (row.get_item(1)?, row.get_item(2)?);
    let (Ok(asks), Ok(gives)) = (
        floats.0.downcast_exact::<PyFloat>(),
        floats.1.downcast_exact::<PyFloat>(),
    ) else {
        return Ok(None);
    };
    for n in [0, 3, 4] {
        if !row.get_item(n)?.is_exact_instance_of::<PyLong>() {
            return Ok(None);
        }
    }
    Ok(Some(Row {
        day: row.get_item(0)?.extract()?,
        asks_out: asks.value(),
        gives_out: gives.value(),
        inbound: row.get_item(3)?.extract()?,
        outbound: row.get_item(4)?.extract()?,
    }))
}

fn sorted_two(existing: &[i64], at: i64) -> Vec<i64> {
    let mut all: Vec<i64> = existing.to_vec();
    all.push(at);
    all.sort_unstable();
    all.truncate(2);
    all
}

/// What the fold reads of one touch.
pub struct Fields<'py> {
    pub at: i64,
    pub event_id: Bound<'py, PyString>,
    pub inbound: bool,
    pub kind: Bound<'py, PyString>,
    pub conversational: bool,
    pub intent: Bound<'py, PyString>,
    pub platform: Bound<'py, PyAny>,
    pub conversation_id: Bound<'py, PyAny>, // None or a str
    pub member: Bound<'py, PyAny>,          // None or a str
}

/// A Python `Touch`'s fields.
pub fn fields_of<'py>(py: Python<'py>, touch: &Bound<'py, PyAny>) -> PyResult<Fields<'py>> {
    Ok(Fields {
        at: touch.getattr(intern!(py, "at"))?.extract()?,
        event_id: touch
            .getattr(intern!(py, "event_id"))?
            .downcast_into::<PyString>()?,
        inbound: touch.getattr(intern!(py, "inbound"))?.extract()?,
        kind: touch
            .getattr(intern!(py, "kind"))?
            .downcast_into::<PyString>()?,
        conversational: touch.getattr(intern!(py, "conversational"))?.extract()?,
        intent: touch
            .getattr(intern!(py, "intent"))?
            .downcast_into::<PyString>()?,
        platform: touch.getattr(intern!(py, "platform"))?,
        conversation_id: touch.getattr(intern!(py, "conversation_id"))?,
        member: touch.getattr(intern!(py, "member"))?,
    })
}

/// `fold_in_order(t, touches, policy)`; `classes` is (Tally, Run). None: fold in Python.
#[pyfunction]
pub fn fold_in_order<'py>(
    py: Python<'py>,
    t: &Bound<'py, PyAny>,
    touches: &Bound<'py, PyAny>,
    policy: &Bound<'py, PyAny>,
    classes: &Bound<'py, PyTuple>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let fields = touches.iter()?.map(|touch| fields_of(py, &touch?));
    fold(py, t, fields, &Knobs::of(policy)?, classes)
}

/// What the fold and the replay read of a workspace's policy, read once.
pub struct Knobs<'py> {
    pub half_life: f64,
    pub trailing_days: i64,
    limit: Bound<'py, PyAny>,
    pub move_ms: f64,
    pub gap_ms: f64,
    pub weight_of: Bound<'py, PyAny>,
    pub lateness_ms: i64,
    pub lateness_touches: i64,
}

impl<'py> Knobs<'py> {
    pub fn of(policy: &Bound<'py, PyAny>) -> PyResult<Self> {
        let py = policy.py();
        let days = |name: &Bound<'py, PyString>| -> PyResult<f64> {
            Ok(policy.getattr(name)?.extract::<f64>()? * DAY_MS as f64)
        };
        Ok(Knobs {
            half_life: policy.getattr(intern!(py, "half_life_ms"))?.extract()?,
            trailing_days: policy.getattr(intern!(py, "trailing_days"))?.extract()?,
            limit: policy.getattr(intern!(py, "exact_latencies"))?,
            move_ms: days(intern!(py, "platform_move_days"))?,
            gap_ms: days(intern!(py, "conversation_gap_days"))?,
            weight_of: policy.getattr(intern!(py, "weight"))?,
            lateness_ms: policy.getattr(intern!(py, "lateness_ms"))?.extract()?,
            lateness_touches: policy.getattr(intern!(py, "lateness_touches"))?.extract()?,
        })
    }
}

/// The fold over any source of touch fields (Python touches, or the decoder's own).
/// `classes` starts with (Tally, Run).
pub fn fold<'py>(
    py: Python<'py>,
    t: &Bound<'py, PyAny>,
    touches: impl Iterator<Item = PyResult<Fields<'py>>>,
    knobs: &Knobs<'py>,
    classes: &Bound<'py, PyTuple>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let (half_life, trailing_days, limit) = (knobs.half_life, knobs.trailing_days, &knobs.limit);
    let (move_ms, gap_ms, weight_of) = (knobs.move_ms, knobs.gap_ms, &knobs.weight_of);
    // By the (interned) kind and intent strings' identity: an equal string that is another
    // object only makes a second entry of the same weight.
    let mut weights: FxHashMap<(bool, usize, usize), f64> = FxHashMap::default();

    let mut count: i64 = t.getattr(intern!(py, "count"))?.extract()?;
    let mut first_at = int_or_none(&t.getattr(intern!(py, "first_at"))?)?;
    let mut last_at = int_or_none(&t.getattr(intern!(py, "last_at"))?)?;
    let mut last_in_at = int_or_none(&t.getattr(intern!(py, "last_in_at"))?)?;
    let mut last_out_at = int_or_none(&t.getattr(intern!(py, "last_out_at"))?)?;
    let mut last_platform = t.getattr(intern!(py, "last_platform"))?;
    let last_order_obj = t.getattr(intern!(py, "last_order"))?;
    let mut last_order: Option<(i64, Bound<'py, PyString>)> = if last_order_obj.is_none() {
        None
    } else {
        let pair = last_order_obj.downcast::<PyTuple>()?;
        Some((
            pair.get_item(0)?.extract()?,
            pair.get_item(1)?.downcast_into::<PyString>()?,
        ))
    };
    let mut our_open = int_or_none(&t.getattr(intern!(py, "our_open_since"))?)?;
    let mut their_open = int_or_none(&t.getattr(intern!(py, "their_open_since"))?)?;
    let mut our_new: Vec<i64> = Vec::new();
    let mut their_new: Vec<i64> = Vec::new();
    let floats = [
        float_of(t, intern!(py, "gives_out"))?,
        float_of(t, intern!(py, "asks_out"))?,
        float_of(t, intern!(py, "gives_in"))?,
        float_of(t, intern!(py, "asks_in"))?,
        float_of(t, intern!(py, "strength"))?,
    ];
    let [Some(mut gives_out), Some(mut asks_out), Some(mut gives_in), Some(mut asks_in), Some(mut strength)] =
        floats
    else {
        return Ok(None);
    };
    let start_trailing = t.getattr(intern!(py, "trailing"))?;
    let mut trailing: Vec<Row> = Vec::new();
    for item in start_trailing.iter()? {
        match row_of(&item?)? {
            Some(row) => trailing.push(row),
            None => return Ok(None),
        }
    }
    let mut trailing_changed = false;
    let mut strength_at = int_or_none(&t.getattr(intern!(py, "strength_at"))?)?;
    let mut last_conv_day = int_or_none(&t.getattr(intern!(py, "last_conv_day"))?)?;
    let start_gaps = t.getattr(intern!(py, "gaps"))?;
    let mut gaps: Option<BTreeMap<i64, i64>> = None;
    let start_conversations = t.getattr(intern!(py, "conversations"))?;
    let mut conversations: Option<Bound<'py, PyDict>> = None;
    let run = t.getattr(intern!(py, "run"))?;
    let has_start_run = !run.is_none();
    let (mut run_at, mut run_in, mut run_out, mut run_ok): (i64, i64, i64, bool) = if has_start_run
    {
        (
            run.getattr(intern!(py, "last_at"))?.extract()?,
            run.getattr(intern!(py, "inbound"))?.extract()?,
            run.getattr(intern!(py, "outbound"))?.extract()?,
            run.getattr(intern!(py, "qualified"))?.extract()?,
        )
    } else {
        (0, 0, 0, false)
    };
    let mut has_run = has_start_run;
    let mut run_qualified_at: Vec<i64> = t.getattr(intern!(py, "run_qualified_at"))?.extract()?;
    let platforms = t
        .getattr(intern!(py, "platforms"))?
        .downcast_into::<PyFrozenSet>()?;
    let members = t
        .getattr(intern!(py, "members"))?
        .downcast_into::<PyFrozenSet>()?;
    let mut new_platforms: Vec<Bound<'py, PyAny>> = Vec::new();
    let mut new_members: Vec<Bound<'py, PyAny>> = Vec::new();
    let mut platform_moves: i64 = t.getattr(intern!(py, "platform_moves"))?.extract()?;
    let last_conv_obj = t.getattr(intern!(py, "last_conv"))?;
    let mut last_conv: Option<(i64, Bound<'py, PyAny>)> = if last_conv_obj.is_none() {
        None
    } else {
        let pair = last_conv_obj.downcast::<PyTuple>()?;
        Some((pair.get_item(0)?.extract()?, pair.get_item(1)?))
    };

    for touch in touches {
        let touch = touch?;
        let at = touch.at;
        let inbound = touch.inbound;
        let intent_obj = touch.intent;
        let intent = intent_obj.to_str()?;
        let platform_obj = touch.platform;
        let kind_obj = touch.kind;
        let key = (
            inbound,
            kind_obj.as_ptr() as usize,
            intent_obj.as_ptr() as usize,
        );
        let weight = match weights.get(&key) {
            Some(w) => *w,
            None => {
                let direction = if inbound { "inbound" } else { "outbound" };
                let found = weight_of.call1((direction, &kind_obj, &intent_obj))?;
                let Ok(w) = found.downcast_exact::<PyFloat>() else {
                    return Ok(None);
                };
                weights.insert(key, w.value());
                w.value()
            }
        };
        // _strength
        match strength_at {
            None => {
                strength = weight;
                strength_at = Some(at);
            }
            Some(since) if at >= since => {
                strength = strength * half_pow((at - since) as f64 / half_life) + weight;
                strength_at = Some(at);
            }
            Some(since) => {
                strength += weight * half_pow((since - at) as f64 / half_life);
            }
        }
        count += 1;
        if first_at.is_none_or(|f| at < f) {
            first_at = Some(at);
        }
        if last_at.is_none_or(|l| at > l) {
            last_at = Some(at);
        }
        // _trailing (newest = at)
        let day = at.div_euclid(DAY_MS);
        let horizon = day - trailing_days + 1;
        trailing_changed = true;
        let mut row: Option<usize> = None;
        if !trailing.is_empty()
            && trailing[0].day >= horizon
            && day >= trailing[trailing.len() - 1].day
        {
            if day == trailing[trailing.len() - 1].day {
                row = Some(trailing.len() - 1);
            } else {
                trailing.push(Row {
                    day,
                    asks_out: 0.0,
                    gives_out: 0.0,
                    inbound: 0,
                    outbound: 0,
                });
                row = Some(trailing.len() - 1);
            }
        } else {
            trailing.retain(|r| r.day >= horizon);
            if day >= horizon {
                for (n, r) in trailing.iter().enumerate() {
                    if r.day == day {
                        row = Some(n);
                    }
                }
                if row.is_none() {
                    trailing.push(Row {
                        day,
                        asks_out: 0.0,
                        gives_out: 0.0,
                        inbound: 0,
                        outbound: 0,
                    });
                    trailing.sort_by_key(|r| r.day); // stable, as list.sort
                                                     // The new row is the only one of its day (none was found above).
                    row = trailing.iter().position(|r| r.day == day);
                }
            }
        }
        let ask = intent == "ask";
        if let Some(n) = row {
            let r = &mut trailing[n];
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
                asks_in += weight;
            } else {
                gives_in += weight;
            }
            if last_in_at.is_none_or(|l| at > l) {
                last_in_at = Some(at);
            }
        } else {
            if ask {
                asks_out += weight;
            } else {
                gives_out += weight;
            }
            if last_out_at.is_none_or(|l| at > l) {
                last_out_at = Some(at);
            }
        }
        let event_id = touch.event_id;
        let later = match &last_order {
            None => true,
            Some((o_at, o_id)) => {
                at > *o_at || (at == *o_at && event_id.to_str()? > o_id.to_str()?)
            }
        };
        if later {
            last_order = Some((at, event_id));
            last_platform = platform_obj.clone();
        }
        if !platforms.contains(&platform_obj)? && !contains(&new_platforms, &platform_obj)? {
            new_platforms.push(platform_obj.clone());
        }
        let member = touch.member;
        if !member.is_none() && !members.contains(&member)? && !contains(&new_members, &member)? {
            new_members.push(member);
        }
        if !touch.conversational {
            continue;
        }
        let cid = touch.conversation_id;
        if !cid.is_none() {
            // _conversation
            let dict = match &conversations {
                Some(d) => d.clone(),
                None => {
                    let d = PyDict::new_bound(py);
                    d.call_method1(intern!(py, "update"), (&start_conversations,))?;
                    conversations = Some(d.clone());
                    d
                }
            };
            let (ins, outs): (Vec<i64>, Vec<i64>) = match dict.get_item(&cid)? {
                Some(pair) => pair.extract()?,
                None => (Vec::new(), Vec::new()),
            };
            let updated = if inbound {
                (sorted_two(&ins, at), outs.clone())
            } else {
                (ins.clone(), sorted_two(&outs, at))
            };
            if updated != (ins, outs) {
                let value = PyTuple::new_bound(
                    py,
                    [
                        PyTuple::new_bound(py, &updated.0).into_any(),
                        PyTuple::new_bound(py, &updated.1).into_any(),
                    ],
                );
                dict.set_item(&cid, value)?;
            }
        }
        // _waits
        if inbound {
            if our_open.is_none() {
                our_open = Some(at);
            }
            if let Some(open) = their_open.take() {
                their_new.push(at - open);
            }
        } else {
            if their_open.is_none() {
                their_open = Some(at);
            }
            if let Some(open) = our_open.take() {
                our_new.push(at - open);
            }
        }
        // _rhythm
        if last_conv_day.is_none_or(|d| day > d) {
            if let Some(previous) = last_conv_day {
                if gaps.is_none() {
                    let start: Vec<(i64, i64)> = start_gaps.extract()?;
                    gaps = Some(start.into_iter().collect());
                }
                if let Some(map) = gaps.as_mut() {
                    *map.entry(day - previous).or_insert(0) += 1;
                }
            }
            last_conv_day = Some(day);
        }
        if let Some((previous_at, previous_platform)) = &last_conv {
            if !previous_platform.eq(&platform_obj)? && ((at - previous_at) as f64) <= move_ms {
                platform_moves += 1;
            }
        }
        last_conv = Some((at, platform_obj));
        if cid.is_none() {
            // _run
            if !has_run || (at - run_at) as f64 >= gap_ms {
                run_in = 0;
                run_out = 0;
                run_ok = false;
                has_run = true;
            }
            run_at = at;
            if inbound {
                run_in += 1;
            } else {
                run_out += 1;
            }
            if !run_ok && run_in >= 2 && run_out >= 2 {
                run_ok = true;
                run_qualified_at.push(at);
            }
        }
    }

    let (tally_class, run_class) = (classes.get_item(0)?, classes.get_item(1)?);
    let kwargs = PyDict::new_bound(py);
    let set = |name: &Bound<'py, PyString>, value: Bound<'py, PyAny>| kwargs.set_item(name, value);
    let opt = |value: Option<i64>| -> Bound<'py, PyAny> {
        value.map_or_else(
            || py.None().into_bound(py),
            |v| v.into_py(py).into_bound(py),
        )
    };
    set(intern!(py, "count"), count.into_py(py).into_bound(py))?;
    set(intern!(py, "first_at"), opt(first_at))?;
    set(intern!(py, "last_at"), opt(last_at))?;
    set(intern!(py, "last_in_at"), opt(last_in_at))?;
    set(intern!(py, "last_out_at"), opt(last_out_at))?;
    set(intern!(py, "last_platform"), last_platform)?;
    let order = match last_order {
        Some((at, id)) => {
            PyTuple::new_bound(py, [at.into_py(py), id.into_any().unbind()]).into_any()
        }
        None => py.None().into_bound(py),
    };
    set(intern!(py, "last_order"), order)?;
    set(intern!(py, "our_open_since"), opt(our_open))?;
    let our = t.getattr(intern!(py, "our"))?;
    let their = t.getattr(intern!(py, "their"))?;
    set(
        intern!(py, "our"),
        our.call_method1(
            intern!(py, "add_many"),
            (PyList::new_bound(py, &our_new), limit),
        )?,
    )?;
    set(intern!(py, "their_open_since"), opt(their_open))?;
    set(
        intern!(py, "their"),
        their.call_method1(
            intern!(py, "add_many"),
            (PyList::new_bound(py, &their_new), limit),
        )?,
    )?;
    set(
        intern!(py, "gives_out"),
        gives_out.into_py(py).into_bound(py),
    )?;
    set(intern!(py, "asks_out"), asks_out.into_py(py).into_bound(py))?;
    set(intern!(py, "gives_in"), gives_in.into_py(py).into_bound(py))?;
    set(intern!(py, "asks_in"), asks_in.into_py(py).into_bound(py))?;
    let trailing_obj = if trailing_changed {
        let rows: Vec<Bound<'py, PyTuple>> = trailing
            .iter()
            .map(|r| {
                PyTuple::new_bound(
                    py,
                    [
                        r.day.into_py(py),
                        r.asks_out.into_py(py),
                        r.gives_out.into_py(py),
                        r.inbound.into_py(py),
                        r.outbound.into_py(py),
                    ],
                )
            })
            .collect();
        PyTuple::new_bound(py, rows).into_any()
    } else {
        start_trailing
    };
    set(intern!(py, "trailing"), trailing_obj)?;
    set(intern!(py, "strength"), strength.into_py(py).into_bound(py))?;
    set(intern!(py, "strength_at"), opt(strength_at))?;
    set(intern!(py, "last_conv_day"), opt(last_conv_day))?;
    let gaps_obj = match gaps {
        Some(map) => {
            let items: Vec<Bound<'py, PyTuple>> = map
                .into_iter()
                .map(|(g, c)| PyTuple::new_bound(py, [g, c]))
                .collect();
            PyTuple::new_bound(py, items).into_any()
        }
        None => start_gaps,
    };
    set(intern!(py, "gaps"), gaps_obj)?;
    set(
        intern!(py, "conversations"),
        conversations.map_or(start_conversations, |d| d.into_any()),
    )?;
    let run_obj = if has_run {
        run_class.call1((run_at, run_in, run_out, run_ok))?
    } else {
        py.None().into_bound(py)
    };
    set(intern!(py, "run"), run_obj)?;
    set(
        intern!(py, "run_qualified_at"),
        PyTuple::new_bound(py, &run_qualified_at).into_any(),
    )?;
    set(
        intern!(py, "platforms"),
        grown(py, platforms, new_platforms)?,
    )?;
    set(
        intern!(py, "platform_moves"),
        platform_moves.into_py(py).into_bound(py),
    )?;
    let conv = match last_conv {
        Some((at, platform)) => {
            PyTuple::new_bound(py, [at.into_py(py), platform.unbind()]).into_any()
        }
        None => py.None().into_bound(py),
    };
    set(intern!(py, "last_conv"), conv)?;
    set(intern!(py, "members"), grown(py, members, new_members)?)?;
    set(intern!(py, "late"), t.getattr(intern!(py, "late"))?)?;
    Ok(Some(tally_class.call((), Some(&kwargs))?))
}

fn contains(items: &[Bound<'_, PyAny>], value: &Bound<'_, PyAny>) -> PyResult<bool> {
    for item in items {
        if item.eq(value)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `frozenset(set(start) | new)`, or `start` itself when nothing is new (as the Python fold).
fn grown<'py>(
    py: Python<'py>,
    start: Bound<'py, PyFrozenSet>,
    new: Vec<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    if new.is_empty() {
        return Ok(start.into_any());
    }
    let all: Vec<Bound<'py, PyAny>> = start.iter().chain(new).collect();
    Ok(PyFrozenSet::new_bound(py, &all)?.into_any())
}
