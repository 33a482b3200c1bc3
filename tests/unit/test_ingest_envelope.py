"""The ingest's fast paths write what the slow ones wrote: the envelope's JSON, the metrics."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from events.envelope import RawEnvelope
from streams.ingest import encode_envelope
from streams.ingest_metrics import PRODUCE_BUCKETS, Metrics
from streams.webhooks.base import hmac_sha256

header_values = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@given(
    workspace=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20),
    source=st.sampled_from(["x", "meta", "linkedin", "slack", "mastodon", "generic"]),
    offset=st.integers(min_value=0, max_value=10**15),
    headers=st.dictionaries(st.text(min_size=1, max_size=20), header_values, max_size=5),
    body=st.binary(max_size=300),
)
def test_the_envelope_is_pydantics_json_byte_for_byte(
    workspace: str, source: str, offset: int, headers: dict[str, str], body: bytes
) -> None:
    received_at = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=offset)
    fields = {
        "workspace": workspace,
        "source": source,
        "received_at": received_at,
        "headers": headers,
        "body": body,
    }
    encoded = encode_envelope(workspace, source, received_at, headers, body)
    assert encoded == RawEnvelope(**fields).dumps()  # type: ignore[arg-type]
    assert RawEnvelope.loads(encoded) == RawEnvelope(**fields)  # type: ignore[arg-type]


def test_metrics_keep_their_series() -> None:
    metrics = Metrics()
    metrics.count("x", 200)
    metrics.count("x", 200)
    metrics.count("myspace", 404)  # a caller-controlled platform is `unknown`
    metrics.observe_produce(0.003)
    metrics.observe_produce(0.005)  # a bound belongs to its bucket (le)
    metrics.observe_produce(60.0)
    metrics.in_flight = 2
    text = metrics.exposition().decode()
    assert "# TYPE rapport_ingest_requests_total counter" in text
    assert 'rapport_ingest_requests_total{platform="x",status="200"} 2.0' in text
    assert 'rapport_ingest_requests_total{platform="unknown",status="404"} 1.0' in text
    assert 'rapport_ingest_requests_created{platform="x",status="200"}' in text
    assert "myspace" not in text
    assert "# TYPE rapport_ingest_produce_seconds histogram" in text
    expected = {0.001: 0, 0.0025: 0, 0.005: 2, 0.01: 2, 5.0: 2}
    for bound, count in expected.items():
        assert f'rapport_ingest_produce_seconds_bucket{{le="{bound}"}} {count:.1f}' in text
    assert 'rapport_ingest_produce_seconds_bucket{le="+Inf"} 3.0' in text
    assert "rapport_ingest_produce_seconds_count 3.0" in text
    assert "rapport_ingest_produce_seconds_sum 60.008" in text
    assert "rapport_ingest_produce_seconds_created " in text
    assert (
        len([line for line in text.splitlines() if "_bucket{" in line]) == len(PRODUCE_BUCKETS) + 1
    )
    assert "# TYPE rapport_ingest_in_flight gauge" in text
    assert "rapport_ingest_in_flight 2.0" in text
    assert 'rapport_ingest_refused_total{platform="x",reason="signature"} 0.0' in text


@given(secret=st.one_of(st.text(max_size=80), st.binary(max_size=80)), bodies=st.lists(st.binary()))
def test_the_keyed_hmac_state_is_hmac_sha256(secret: str | bytes, bodies: list[bytes]) -> None:
    key = secret.encode() if isinstance(secret, str) else secret
    for body in bodies:  # the cached keyed state is copied, never consumed
        assert hmac_sha256(secret, body) == hmac.digest(key, body, "sha256")
