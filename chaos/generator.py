"""Deterministic webhook traffic: seeded, signed, every event with a known id.

The chaos scenarios need to know exactly which events should end up in ClickHouse, so the
generator plans them first (`Plan.events`, each with the `event_id` the adapters will derive)
and only then packs them into deliveries: generic-webhook bodies (docs/generic-webhook.md)
signed the Standard Webhooks way, as a CRM or mail system would send them. Poison bodies are
authentic (correctly signed) but unreadable, so they must end in the dead-letter topic.

Every event of a plan happens within `span_s` (6 days by default) of the first one: less than
the policy's 7-day lateness window, so no arrival order, retry delay or redelivery can make an
event late, and the live projections must equal a replay field for field.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from events.ids import event_id
from streams.webhooks.generic import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)
from streams.webhooks.x import SIGNATURE_HEADER as X_SIGNATURE_HEADER
from streams.webhooks.x import signature as x_signature

WORKSPACE = "chaos"
GENERIC_SECRET = "chaos-generic-secret"
X_SECRET = "chaos-x-secret"
PLATFORM = "email"
OWNED = {"sam@chaos.example": "sam", "kim@chaos.example": "kim", "lee@chaos.example": "lee"}
X_OWNER = "4242"
T0_S = 1_714_521_600  # 2024-05-01T00:00:00Z
SPAN_S = 6 * 86_400  # < the policy's 7-day lateness: nothing can arrive late
KINDS = ("email", "email", "email", "reply", "message", "meeting", "call", "introduction")
TEXTS = (
    None,
    "Could you send the contract draft?",
    "Thanks a lot for the intro!",
    "Here is the deck I promised, happy to help.",
    "Hi!",
    "Can we meet next week?",
    "Following up on our call.",
    "I recommend you talk to Jo, she knows the market.",
)


def workspace_toml() -> str:
    """The workspace file the ingest and the workers load for the chaos workspace."""
    accounts = ", ".join(
        f'{{ platform = "{PLATFORM}", user_id = "{address}", member = "{member}" }}'
        for address, member in OWNED.items()
    )
    return (
        f"[workspaces.{WORKSPACE}]\n"
        f'accounts = [{accounts}, {{ platform = "x", user_id = "{X_OWNER}", member = "brand" }}]\n'
        f"[workspaces.{WORKSPACE}.secrets]\n"
        f'generic_secret = "{GENERIC_SECRET}"\n'
        f'x_consumer_secret = "{X_SECRET}"\n'
    )


@dataclass(frozen=True)
class Planned:
    """One interaction the generator sends; `contact` is None for an internal one."""

    ref: str  # the generic `id` field
    event_id: str
    contact: str | None  # contact id ("email:c7@ext.example") when it feeds a relationship
    inbound: bool
    at_s: int


@dataclass(frozen=True)
class Delivery:
    """One webhook request: where it goes, its bytes, and what it carries."""

    platform: str  # the URL's platform: "generic" or "x"
    msg_id: str  # webhook-id (the same on every redelivery, as Standard Webhooks wants)
    body: bytes
    event_ids: tuple[str, ...] = ()
    poison: str | None = None  # the marker inside a poison body

    def headers(self, now: float | None = None) -> dict[str, str]:
        """Signed headers for sending now (a retry signs again with the current time)."""
        if self.platform == "x":
            return {
                "content-type": "application/json",
                X_SIGNATURE_HEADER: x_signature(X_SECRET, self.body),
            }
        stamp = str(int(time.time() if now is None else now))
        return {
            "content-type": "application/json",
            ID_HEADER: self.msg_id,
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(GENERIC_SECRET, self.msg_id, stamp, self.body),
        }

    @property
    def events(self) -> int:
        return len(self.event_ids)


@dataclass
class Plan:
    """What a scenario sends and therefore what ClickHouse must end up holding."""

    seed: int
    events: list[Planned]
    deliveries: list[Delivery]
    poison: list[str] = field(default_factory=list)

    @property
    def expected_ids(self) -> set[str]:
        return {e.event_id for e in self.events}

    def per_contact(self) -> Counter[str]:
        """Interactions each relationship must count."""
        return Counter(e.contact for e in self.events if e.contact is not None)


def _contact_weights(contacts: int) -> list[float]:
    """A few busy contacts and a long tail, like a real inbox (Zipf-like, exponent 0.8)."""
    return [1.0 / (k + 1) ** 0.8 for k in range(contacts)]


def generate(
    events: int,
    seed: int,
    *,
    per_body: int = 20,
    contacts: int | None = None,
    poison: int = 0,
    span_s: int = SPAN_S,
    tag: str = "",
) -> Plan:
    """Plan `events` interactions in bodies of `per_body`, plus `poison` unreadable bodies.

    The same arguments always give the same bytes (ids, times, texts, order). `tag` keeps the
    ids of two plans apart when a scenario sends more than one.
    """
    if events < 0 or per_body < 1:
        raise ValueError("events must be >= 0 and per_body >= 1")
    rng = random.Random(seed)
    n_contacts = contacts or max(10, events // 50)
    weights = _contact_weights(n_contacts)
    owned = sorted(OWNED)
    planned: list[Planned] = []
    items: list[dict[str, object]] = []
    picks = rng.choices(range(n_contacts), weights=weights, k=events)
    for i in range(events):
        ref = f"chaos-{tag}{seed}-{i}"
        at_s = T0_S + (i * span_s) // max(events, 1)
        member = rng.choice(owned)
        internal = rng.random() < 0.01
        other = rng.choice([o for o in owned if o != member]) if internal else None
        address = other or f"c{picks[i]}@ext.example"
        inbound = rng.random() < 0.5
        actor, subject = (address, member) if inbound else (member, address)
        kind = rng.choice(KINDS)
        item: dict[str, object] = {
            "id": ref,
            "platform": PLATFORM,
            "kind": kind,
            "occurred_at": at_s,
            "actor": actor,
            "subject": subject,
        }
        text = rng.choice(TEXTS)
        if text is not None:
            item["text"] = text
        if rng.random() < 0.6:
            item["conversation_id"] = f"thread-{picks[i]}-{i // 500}"
        items.append(item)
        planned.append(
            Planned(
                ref=ref,
                event_id=event_id(WORKSPACE, PLATFORM, f"generic:{ref}"),
                contact=None if internal else f"{PLATFORM}:{address}",
                inbound=inbound,
                at_s=at_s,
            )
        )
    deliveries: list[Delivery] = []
    for start in range(0, events, per_body):
        chunk = items[start : start + per_body]
        body = json.dumps({"events": chunk}, separators=(",", ":")).encode()
        deliveries.append(
            Delivery(
                platform="generic",
                msg_id=f"msg_{tag}{seed}_{start // per_body}",
                body=body,
                event_ids=tuple(p.event_id for p in planned[start : start + per_body]),
            )
        )
    markers: list[str] = []
    for k in range(poison):
        marker = f"poison_{tag}{seed}_{k:06d}_end"  # no marker contains another
        markers.append(marker)
        at = rng.randrange(len(deliveries) + 1)
        deliveries.insert(at, poison_delivery(marker, k))
    return Plan(seed=seed, events=planned, deliveries=deliveries, poison=markers)


def poison_delivery(marker: str, variant: int) -> Delivery:
    """An authentic delivery no adapter can read, carrying `marker` (three shapes in turn)."""
    shape = variant % 3
    if shape == 0:  # not JSON at all
        body = f'{{"events": [{marker} is not json'.encode()
        return Delivery("generic", f"msg_{marker}", body, poison=marker)
    if shape == 1:  # JSON, but not the schema
        bad = {"id": marker, "platform": PLATFORM, "kind": "teleport", "occurred_at": "soon"}
        body = json.dumps({"events": [bad]}).encode()
        return Delivery("generic", f"msg_{marker}", body, poison=marker)
    body = json.dumps({"for_user_id": X_OWNER, "direct_message_events": marker}).encode()
    return Delivery("x", f"msg_{marker}", body, poison=marker)


def redeliver_and_shuffle(
    deliveries: Sequence[Delivery], seed: int, *, max_copies: int = 3, window: int = 200
) -> list[Delivery]:
    """Every delivery 1..`max_copies` times, each copy moved by up to `window` positions.

    Senders retry and reorder; a copy never moves further than `window` deliveries, which with
    the plan's span stays inside the lateness window (the plan's whole span already does).
    """
    rng = random.Random(seed ^ 0x5EED)
    keyed: list[tuple[float, int, Delivery]] = []
    for index, delivery in enumerate(deliveries):
        copies = 1 + rng.choices(range(max_copies), weights=[5, 3, 2][:max_copies])[0]
        if delivery.poison is not None:
            copies = 1  # one dead letter per poison body keeps the count exact
        for copy in range(copies):
            keyed.append((index + rng.uniform(0, window), copy, delivery))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [d for _, _, d in keyed]


def total_events(deliveries: Iterable[Delivery]) -> int:
    return sum(d.events for d in deliveries)
