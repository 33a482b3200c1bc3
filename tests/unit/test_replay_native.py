"""The native replay decoder (`native/`) against the Python decoder it stands in for.

Both read the same log values; whatever the native one takes must give exactly what the Python
one gives (counts, ids, identities, touches, interaction rows), and whatever it refuses goes
the Python way in its place in the log. Checked on real data, on hand-made edge cases of the
JSON and of the times, and on generated events.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.ids import event_id
from events.models import (
    Identity,
    IdentityLinked,
    IdentityUnlinked,
    Interaction,
    dump_event,
    epoch_ms,
)
from projections.policy import DEFAULT_POLICY, Policy
from projections.relationship import replayed
from projections.schema import INTERACTION_COLUMNS
from projections.tally import Touch
from streams.replay import native
from streams.replay.arrow import relationship_arrow
from streams.replay.recalculation import Recalculation, fold_jobs, jobs_of
from tests.datasets import collegemsg_interactions, collegemsg_most_active, reddit_interactions
from tests.unit.test_replay_core import THREAD

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def test_the_native_decoder_is_built() -> None:
    # `make setup` builds it: a missing build would make every replay slower, silently.
    assert native.module() is not None


def read(values: list[bytes], use_native: bool, **kwargs: Any) -> dict[str, Any]:
    """Everything a shard learns from `values`, fed in fetch-sized batches."""
    calc = Recalculation(kwargs.get("workspaces"), flat_rows=True, native=use_native)
    assert (calc._decoder is not None) == use_native
    tables = []
    records = [(None, v) for v in values]
    for start in range(0, len(records), 97):
        calc.add_records(records[start : start + 97])
        made = calc.take_arrow()
        if made is not None:
            tables.append(made)
    summary = calc.summary()
    contacts = calc.identity_map()
    _, groups = calc.assign(contacts)
    rows = sorted((tuple(r.values()) for t in tables for r in t.to_pylist()), key=lambda r: repr(r))
    if tables:
        assert all(t.column_names == list(INTERACTION_COLUMNS) for t in tables)
        assert len({str(t.schema) for t in tables}) == 1
    return {
        "counts": {k: summary[k] for k in ("events", "interactions", "duplicates", "links")},
        "invalid": summary["invalid"],
        "touches": summary["touches"],
        "identities": sorted(summary["identities"]),
        "ids": len(summary["ids"]),
        "groups": {
            key: sorted((msgspec.structs.astuple(t) for part in lists for t in part), key=repr)
            for key, lists in groups.items()
        },
        "rows": rows,
    }


def assert_same(values: list[bytes], **kwargs: Any) -> dict[str, Any]:
    python = read(values, False, **kwargs)
    fast = read(values, True, **kwargs)
    assert fast == python
    return fast


@pytest.fixture(scope="module")
def real_values() -> list[bytes]:
    college = collegemsg_interactions({"323", "9", "12", "2", "42"}, limit=3000)
    reddit = reddit_interactions(THREAD, {"mrgnome"})
    events: list[Any] = college + reddit
    people = sorted({e.contact.key for e in events if e.contact is not None})
    links = [
        IdentityLinked(
            event_id=event_id("college", "link", str(n)),
            workspace=events[0].workspace,
            occurred_at=T0 + timedelta(seconds=n),
            identity=Identity(platform=p.split(":")[0], user_id=p.split(":", 1)[1]),
            contact_id=f"person-{n % 7}",
        )
        for n, p in enumerate(people[:40])
    ]
    unlink = IdentityUnlinked(
        event_id=event_id("college", "unlink", "0"),
        workspace=events[0].workspace,
        occurred_at=T0 + timedelta(days=1),
        identity=links[0].identity,
    )
    values = [dump_event(e) for e in [*events, *links, unlink]]
    random.Random(3).shuffle(values)
    return values + values[:300]  # redeliveries


def test_real_events_give_the_same_touches_and_rows(real_values: list[bytes]) -> None:
    got = assert_same(real_values)
    redelivered = [json.loads(v)["type"] for v in real_values[-300:]]
    assert got["counts"]["duplicates"] == redelivered.count("interaction")
    assert got["counts"]["links"] == 41 + len(redelivered) - redelivered.count("interaction")
    assert got["touches"] > 300 and len(got["rows"]) == got["counts"]["interactions"]


def test_the_native_decoder_takes_the_current_interactions_itself(
    real_values: list[bytes],
) -> None:
    calc = Recalculation(flat_rows=True)
    calc.add_records([(None, v) for v in real_values])
    kinds = [json.loads(v)["type"] for v in real_values]
    assert calc._decoder is not None
    assert calc._decoder.events == kinds.count("interaction")  # the links went the Python way
    assert calc.events == len(real_values)


def test_a_workspace_filter_is_the_same(real_values: list[bytes]) -> None:
    workspaces = {json.loads(real_values[0])["workspace"]}
    assert_same(real_values, workspaces=workspaces)
    assert assert_same(real_values, workspaces={"nobody"})["rows"] == []


def interaction(**changes: Any) -> dict[str, Any]:
    doc = json.loads(
        dump_event(
            Interaction.model_validate(
                {
                    "event_id": event_id("w", "x", "1"),
                    "workspace": "w",
                    "occurred_at": T0,
                    "received_at": T0 + timedelta(seconds=3),
                    "platform": "x",
                    "kind": "reply",
                    "actor": {"platform": "x", "user_id": "1"},
                    "subject": {"platform": "x", "user_id": "2"},
                    "direction": "inbound",
                    "contact": {"platform": "x", "user_id": "1"},
                    "account": {"platform": "x", "user_id": "2"},
                    "member": "m",
                    "conversation_id": "c1",
                    "object_id": "o1",
                    "in_reply_to": "o0",
                    "intent": "ask",
                    "raw": {"topic": "rapport.raw.x", "partition": 3, "offset": 17},
                }
            )
        )
    )
    doc.update(changes)
    return doc


RAW = b'"raw":{"topic":"rapport.raw.x","partition":3,"offset":17}'


def raw_variants() -> list[bytes]:
    """One event written in the ways JSON allows, and in ways it does not."""
    good = json.dumps(interaction(), separators=(",", ":")).encode()
    return [
        good,
        good + b"  \n",
        b" " + good,
        good + b"x",
        good[:-1] + b",}",
        good.replace(b'"schema_version":1', b'"schema_version":01'),
        good.replace(b'"schema_version":1', b'"schema_version":1.0'),
        good.replace(b'"schema_version":1', b'"schema_version":1e0'),
        good.replace(b'"schema_version":1', b'"schema_version":true'),
        good.replace(b'"schema_version":1', b'"schema_version":"1"'),
        good.replace(b'"schema_version":1', b'"schema_version":99999999999999999999999'),
        good.replace(b'"member":"m"', b'"member":"\\u00e9\\ud83d\\ude00"'),
        good.replace(b'"member":"m"', b'"member":"a\\"b\\\\c\\/d\\n"'),
        good.replace(b'"member":"m"', b'"member":"tab\there"'),
        good.replace(b'"member":"m"', b'"member":"\\x41"'),
        good.replace(b'"member":"m"', '"member":"caf\u00e9"'.encode()),
        good.replace(b'"member":"m"', b'"member":"\xff"'),
        good.replace(b'"member":"m"', b'"member":null'),
        good.replace(b'"member":"m"', b'"member":"m","member":"n"'),
        good.replace(b'"intent":"ask"', b'"intent":null'),
        good.replace(b'"intent":"ask"', b'"other":{"a":[1,2,{"b":null}]}'),
        good.replace(b'"object_id":"o1"', b'"object_id":null'),
        good.replace(b'"object_id":"o1"', b'"object_id":""'),
        good.replace(b'"workspace":"w"', b'"workspace":"w\\u0000x"'),
        good.replace(b'"direction":"inbound"', b'"direction":"internal"'),
        good.replace(b'"direction":"inbound"', b'"direction":"outbound"'),
        good.replace(
            b'"raw":{"topic":"rapport.raw.x","partition":3,"offset":17}', b'"raw":{"partition":3}'
        ),
        good.replace(b'"raw":{"topic":"rapport.raw.x","partition":3,"offset":17}', b'"raw":null'),
        good.replace(b'"type":"interaction"', b'"type":"Interaction"'),
        b"[" + good + b"]",
        b"",
        b"null",
        b"\xef\xbb\xbf" + good,
        good.replace(b'"contact":{', b'"contact":null,"x":{'),
        good.replace(b'"actor":{"platform":"x","user_id":"1"}', b'"actor":{"platform":"x"}'),
    ]


def test_edge_cases_of_the_json_go_the_same_way() -> None:
    for value in raw_variants():
        assert read([value], True) == read([value], False), value


def test_lone_surrogates_go_the_python_way() -> None:
    # msgspec refuses them, so the Python decoder hands them to the full parser; the native
    # decoder must not take them either.
    good = json.dumps(interaction(), separators=(",", ":")).encode()
    for escape in (b"\\ud800", b"\\udc00x", b"a\\ud83d"):
        calc = Recalculation(flat_rows=True)
        assert calc._decoder is not None
        calc.add_records([(None, good.replace(b'"member":"m"', b'"member":"' + escape + b'"'))])
        assert calc._decoder.events == 0 and calc.events == 1


TIMES = [
    "2024-03-01T00:00:00Z",
    "2024-03-01T00:00:00.5Z",
    "2024-03-01T00:00:00.000500Z",
    "2024-03-01T00:00:00.0005Z",
    "2024-03-01T00:00:00.9999995Z",
    "2024-03-01T00:00:00.123456789Z",
    "2024-03-01T00:00:00+02:00",
    "2024-03-01T00:00:00-00:00",
    "2024-03-01T00:00:00+00:00",
    "2024-03-01T00:00:00-23:59",
    "2024-03-01T00:00:00+24:00",
    "2024-03-01T00:00:00",
    "2024-03-01T00:00:00z",
    "2024-03-01t00:00:00Z",
    "2024-03-01 00:00:00Z",
    "2024-02-29T12:00:00Z",
    "2023-02-29T12:00:00Z",
    "2024-04-31T12:00:00Z",
    "2024-03-01T24:00:00Z",
    "2024-03-01T23:59:60Z",
    "1899-12-31T23:59:59Z",
    "1900-01-01T00:00:00+01:00",
    "1969-12-31T23:59:59.999500Z",
    "1969-12-31T23:59:59.9995Z",
    "2200-12-31T23:59:59.999999Z",
    "2201-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "2024-3-01T00:00:00Z",
    "2024-03-01T00:00:00.Z",
    "2024-03-01",
    "",
]


def test_times_in_every_form_go_the_same_way() -> None:
    taken = [t for t in TIMES if native.module().epoch_ms_of(t) is not None]
    assert taken == TIMES[:4] + TIMES[6:10] + TIMES[15:16] + TIMES[21:25]
    for n, text in enumerate(TIMES):
        for field in ("occurred_at", "received_at"):
            value = json.dumps(interaction(**{field: text, "event_id": f"{n:032x}"})).encode()
            assert read([value], True) == read([value], False), (field, text)


class _When(msgspec.Struct):
    at: datetime


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1900, 1, 2), max_value=datetime(2200, 12, 30), timezones=st.just(UTC)
    ),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
    st.sampled_from([0, 1, 2, 3, 6]),
)
def test_the_native_time_equals_msgspec_and_epoch_ms(
    moment: datetime, offset_minutes: int, digits: int
) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    local = moment.astimezone(zone)
    if digits == 0:
        local = local.replace(microsecond=0)
    text = local.isoformat(timespec={0: "seconds", 3: "milliseconds"}.get(digits, "microseconds"))
    if digits in (1, 2):
        text = text[: 20 + digits] + text[26:]
    text = text.replace("+00:00", "Z") if offset_minutes == 0 and digits != 2 else text
    decoded = msgspec.json.decode(json.dumps({"at": text}).encode(), type=_When).at
    assert native.module().epoch_ms_of(text) == epoch_ms(decoded), text


def variant_event(draw: Any, n: int) -> bytes:
    """An interaction of a generated shape: plain, or with one field in another form."""
    workspace = draw(st.sampled_from(["w", "v", "café"]))
    who = draw(st.sampled_from(["1", "2", "3", "ü", 'q"x']))
    doc = interaction(
        event_id=draw(
            st.sampled_from([f"{n:032x}", f"{n % 5:032x}", f"id-{n % 7}", f"{n:032X}", ""])
        ),
        workspace=workspace,
        direction=draw(st.sampled_from(["inbound", "outbound", "internal"])),
        kind=draw(st.sampled_from(["reply", "mention", "message", "like", "meeting"])),
        occurred_at=draw(st.sampled_from(TIMES[:12])),
        received_at=draw(st.sampled_from(TIMES[:8])),
        contact=draw(st.sampled_from([{"platform": "x", "user_id": who}, None])),
        conversation_id=draw(st.sampled_from(["c1", None, "ç"])),
        member=draw(st.sampled_from(["m", None])),
        intent=draw(st.sampled_from(["ask", "give", "neutral"])),
    )
    for field in draw(st.sets(st.sampled_from(["subject", "account", "raw", "in_reply_to"]))):
        doc.pop(field)
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_generated_logs_give_the_same_result(data: Any) -> None:
    count = data.draw(st.integers(min_value=1, max_value=40))
    values = [variant_event(data.draw, n) for n in range(count)]
    legacy = data.draw(st.booleans())
    if legacy:  # an event of the stored version 0, and a link, among them
        values.insert(
            count // 2,
            json.dumps(
                {
                    "event_id": f"{1:032x}",
                    "workspace": "w",
                    "occurred_at": 1709251200000,
                    "received_at": 1709251200000,
                    "platform": "x",
                    "kind": "reply",
                    "actor": "x:1",
                    "subject": "x:2",
                    "direction": "inbound",
                    "object_id": "o9",
                }
            ).encode(),
        )
    assert_same(values)


def test_a_refused_event_keeps_its_place_among_duplicates() -> None:
    # The same id twice: first in a form only the Python decoder reads (7 fraction digits),
    # then plainly. The first one read counts, as the live worker counts it.
    first = interaction(occurred_at="2024-03-01T00:00:00.1234567Z", object_id="first")
    second = interaction(object_id="second")
    values = [json.dumps(first).encode(), json.dumps(second).encode()]
    got = assert_same(values)
    assert got["counts"]["duplicates"] == 1
    assert [r[INTERACTION_COLUMNS.index("object_id")] for r in got["rows"]] == ["first"]


def test_touches_are_real_touches() -> None:
    got = read([json.dumps(interaction()).encode()], True)
    ((key, touches),) = got["groups"].items()
    assert key == ("w", "x:1")
    assert touches == [msgspec.structs.astuple(Touch(epoch_ms(T0), event_id("w", "x", "1"),
                       True, "reply", True, "ask", "x", "c1", "m"))]  # fmt: skip


def test_the_native_fold_gives_the_python_states_on_real_histories() -> None:
    # Every relationship of real CollegeMsg histories, folded by the native fold and by the
    # Python one: the same states and the same stored bytes (a strength one bit off would show).
    owned = set(collegemsg_most_active(20))
    values = [dump_event(e) for e in collegemsg_interactions(owned)]
    calc = Recalculation(flat_rows=True)
    calc.add_records([(None, v) for v in values])
    _, groups = calc.assign(calc.identity_map())
    jobs, _ = jobs_of(groups, lambda _: DEFAULT_POLICY)
    assert sum(len(j[2]) for j in jobs) > 10_000
    for workspace, contact, touches in jobs:
        fast = replayed(workspace, contact, touches, DEFAULT_POLICY, native=True)
        python = replayed(workspace, contact, touches, DEFAULT_POLICY, native=False)
        assert fast == python
        assert fast.to_json() == python.to_json()


class Collected:
    """An `emit` for `fold_natively`: what it is handed, kept."""

    def __init__(self) -> None:
        self.views: list[Any] = []
        self.changelog: list[Any] = []

    def __call__(self, views: list[Any], changelog: list[Any], touches: int) -> None:
        self.views += views
        self.changelog += changelog


def fold_both_ways(
    values: list[bytes], shared_count: int = 3, policy: Policy = DEFAULT_POLICY
) -> dict[str, Any]:
    """The shard's fold of `values` with Python touches (`assign`, `fold_jobs`) and with the
    native core's (`fold_natively`): `relationships` rows, table records, the shared
    relationships' touches, the policies; asserted equal, the native result returned, with how
    many relationships the native replay folded itself (`native`) and the Python fold took
    (`python`)."""
    out = []
    for use_native in (False, True):
        calc = Recalculation(flat_rows=True, native=use_native)
        calc.add_records([(None, v) for v in values])
        calc.take_arrow()
        contacts = calc.identity_map()
        keys = sorted({(w, contacts.get((w, i), i)) for w, i in calc.summary()["identities"]})
        shared = set(keys[:shared_count])
        tables = []
        if use_native:
            assert calc.folds_natively
            handed, fold = calc.fold_natively(contacts, shared, lambda _: policy)
            collected = Collected()
            policies, table = fold(collected)
            views, changelog = collected.views, collected.changelog
            tables.append(table)
        else:
            assert not calc.folds_natively
            _, groups = calc.assign(contacts)
            handed = {key: groups.pop(key) for key in shared if key in groups}
            jobs, policies = jobs_of(groups, lambda _: policy)
            views, changelog, _ = fold_jobs(jobs, policies, False, native=False)
        tables.append(relationship_arrow([view for _, view in views]))
        rows = pa.concat_tables(tables)
        assert rows.schema == relationship_arrow([]).schema
        out.append(
            {
                "rows": sorted(rows.to_pylist(), key=lambda r: (r["workspace"], r["contact_id"])),
                "changelog": sorted(changelog),
                "handed": {
                    k: sorted((msgspec.structs.astuple(t) for p in v for t in p), key=repr)
                    for k, v in handed.items()
                },
                "policies": sorted(policies),
            }
        )
        native_count, python_count = tables[0].num_rows if use_native else 0, len(views)
    assert out[1] == out[0]
    return {**out[1], "native": native_count, "python": python_count}


def test_the_native_fold_of_a_shard_is_the_python_one(real_values: list[bytes]) -> None:
    # Links (identities merged into contacts), a link undone, redeliveries, shared relationships.
    got = fold_both_ways(real_values)
    assert len(got["rows"]) > 50 and len(got["handed"]) == 3
    assert got["python"] == 0 and got["native"] == len(got["rows"])
    assert len(got["changelog"]) == len(got["rows"])


def test_the_native_fold_leaves_what_it_cannot_take_to_python() -> None:
    # An id not made by `event_id` and two ids of one fingerprint (their first 16 hex digits):
    # those relationships are folded by the Python fold, the others natively, all the same.
    plain = [interaction(event_id=f"{n:016x}{n:016x}", object_id=f"o{n}") for n in range(1, 6)]
    imported = interaction(event_id="imported-7", contact={"platform": "x", "user_id": "2"})
    twins = [
        interaction(event_id="ab" * 8 + f"{n:016x}", contact={"platform": "x", "user_id": "3"})
        for n in (1, 2)
    ]
    legacy = {  # a stored version 0, read by the Python decoder, its touch joined to the others
        "event_id": f"{99:032x}",
        "workspace": "w",
        "occurred_at": 1709251300000,
        "received_at": 1709251300000,
        "platform": "x",
        "kind": "reply",
        "actor": "x:2",
        "subject": "x:9",
        "direction": "inbound",
        "object_id": "o99",
    }
    values = [json.dumps(d).encode() for d in [*plain, imported, *twins, legacy]]
    got = fold_both_ways(values, shared_count=0)
    assert {(r["workspace"], r["contact_id"]) for r in got["rows"]} == {
        ("w", "x:1"),
        ("w", "x:2"),
        ("w", "x:3"),
    }
    assert got["native"] == 1 and got["python"] == 2  # x:2 (imported) and x:3 (twins)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_the_native_fold_of_generated_logs_is_the_python_one(data: Any) -> None:
    count = data.draw(st.integers(min_value=1, max_value=40))
    values = [variant_event(data.draw, n) for n in range(count)]
    fold_both_ways(values, shared_count=data.draw(st.integers(min_value=0, max_value=2)))


native_policies = st.builds(
    Policy,
    version=st.sampled_from(["policy-v1", "p2"]),
    half_life_days=st.sampled_from([0.3, 1.0, 30.0]),
    lateness_days=st.sampled_from([0.0, 0.5, 2.0, 7.0]),
    lateness_touches=st.integers(min_value=1, max_value=12),
    conversation_gap_days=st.sampled_from([0.2, 1.0, 7.0]),
    platform_move_days=st.sampled_from([0.1, 1.0, 7.0]),
    trailing_days=st.integers(min_value=1, max_value=30),
    exact_latencies=st.integers(min_value=1, max_value=30),  # past it: the Python fold
    cadence_qualified_days=st.sampled_from([0.5, 30.0]),
    cadence_default_days=st.sampled_from([1.5, 90.0]),
    weights=st.sampled_from(
        [
            {},
            {"outbound.message": 2.5, "inbound.reaction.ask": 0.3},
            {"outbound.message.ask": -1.0},  # a negative ask: the Python fold
            {"inbound.message": 1e-7, "outbound.reply": 1e17},  # floats written with exponents
        ]
    ),
)


def spread_event(draw: Any, n: int) -> bytes:
    """An interaction of a history spread over about three months (settled touches, trailing
    days dropped, gaps, runs and conversations, platform moves)."""
    who = draw(st.sampled_from(["1", "2", 'é\n"3']))
    print_of = draw(st.sampled_from([n, n, n, n % 3]))  # now and then a shared fingerprint
    return json.dumps(
        interaction(
            event_id=f"{print_of:016x}{n:016x}",
            direction=draw(st.sampled_from(["inbound", "outbound"])),
            kind=draw(st.sampled_from(["reply", "message", "reaction", "meeting"])),
            platform=draw(st.sampled_from(["x", "slack"])),
            occurred_at=(T0 + timedelta(hours=draw(st.integers(0, 2200)))).isoformat(),
            contact={"platform": "x", "user_id": who},
            conversation_id=draw(st.sampled_from(["c1", "c2", None])),
            member=draw(st.sampled_from(["m", "ñ", None])),
            intent=draw(st.sampled_from(["ask", "give", "neutral"])),
        )
    ).encode()


@settings(max_examples=80, deadline=None)
@given(st.data(), native_policies)
def test_the_native_replay_of_long_histories_is_the_python_one(data: Any, policy: Policy) -> None:
    # The stored JSON byte for byte and every relationships column, under policies that move
    # every threshold; what the native replay is unsure of (a latency sketch, a negative
    # weight, a shared fingerprint) goes to the Python fold, with the same result.
    count = data.draw(st.integers(min_value=1, max_value=120))
    values = [spread_event(data.draw, n) for n in range(count)]
    got = fold_both_ways(values, shared_count=0, policy=policy)
    assert got["native"] + got["python"] == len(got["rows"])


def test_the_native_replay_takes_long_histories_itself() -> None:
    # Every real CollegeMsg history of the 20 most active users (over 10,000 touches, months
    # long) under the default policy: all folded natively, a strength one bit off would show.
    owned = set(collegemsg_most_active(20))
    values = [dump_event(e) for e in collegemsg_interactions(owned)]
    got = fold_both_ways(values, shared_count=0)
    assert got["python"] == 0 and got["native"] == len(got["rows"]) > 1


@settings(max_examples=400, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_native_floats_are_written_as_msgspec_writes_them(value: float) -> None:
    assert native.module().json_float(value) == msgspec.json.encode(value).decode()


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_native_strings_are_written_as_msgspec_writes_them(text: str) -> None:
    assert native.module().json_string(text) == msgspec.json.encode(text).decode()


def test_native_json_of_awkward_values() -> None:
    core = native.module()
    for value in [0.0, -0.0, 1e16, 1e15, 1e-5, 1e-6, 5e-324, 1.7976931348623157e308, 0.1 + 0.2]:
        assert core.json_float(value) == msgspec.json.encode(value).decode()
    assert core.json_float(float("nan")) is None
    control = "".join(map(chr, range(0x20))) + '"\\/\x7f\u2028é😀'
    assert core.json_string(control) == msgspec.json.encode(control).decode()


def finish_both_ways(values: list[bytes], policy: Policy = DEFAULT_POLICY) -> dict[str, Any]:
    """A one-process replay's outcome of `values`: `finish` (the Python decoder and fold)
    against `finish_natively` (read in batches as a replay reads them); asserted equal, the
    native one returned."""
    from streams.replay.writers import arrow_rows

    got = []
    for use_native in (False, True):
        calc = Recalculation(flat_rows=use_native, native=use_native)
        parts: list[Any] = []
        for start in range(0, len(values), 500):
            calc.add_records([(None, v) for v in values[start : start + 500]])
            if use_native:
                parts.append(calc.take_arrow())
        if use_native:
            assert calc.folds_natively
            outcome = calc.finish_natively(lambda _: policy, [p for p in parts if p is not None])
        else:
            outcome = calc.finish(lambda _: policy)
        tables = [*outcome.relationship_tables, relationship_arrow(list(outcome.views.values()))]
        interactions = [list(r) for r in outcome.interaction_rows]
        interactions += [row for t in outcome.interaction_tables for row in arrow_rows(t)]
        got.append(
            {
                "rows": sorted(
                    pa.concat_tables(tables).to_pylist(),
                    key=lambda r: (r["workspace"], r["contact_id"]),
                ),
                "changelog": sorted(outcome.changelog),
                "identities": outcome.identities,
                "policies": sorted(outcome.policies),
                "interactions": sorted(interactions),
                "counts": tuple(
                    getattr(outcome, name)
                    for name in (
                        "events",
                        "interactions",
                        "duplicates",
                        "links",
                        "invalid",
                        "relationships",
                        "interaction_count",
                    )
                ),
            }
        )
    assert got[1] == got[0]
    return got[1]


def test_a_one_process_replay_natively_is_the_python_one(real_values: list[bytes]) -> None:
    # An archive replay's read and fold in one process: links, an unlink, redeliveries.
    got = finish_both_ways(real_values)
    assert len(got["rows"]) > 50 and got["counts"][2] > 0 and got["identities"]


@settings(max_examples=25, deadline=None)
@given(st.data(), native_policies)
def test_a_one_process_replay_of_generated_logs_natively_is_the_python_one(
    data: Any, policy: Policy
) -> None:
    count = data.draw(st.integers(min_value=1, max_value=60))
    values = [spread_event(data.draw, n) for n in range(count)]
    values += [variant_event(data.draw, n + count) for n in range(data.draw(st.integers(0, 10)))]
    finish_both_ways(values, policy)
