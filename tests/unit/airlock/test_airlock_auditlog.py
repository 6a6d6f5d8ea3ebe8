"""The hash chain, pure: every kind of tampering is reported at the first broken link."""
import copy

import pytest
from hypothesis import given, strategies as st

from hub.airlock import auditlog


def chain(n=6):
    out, prev = [], None
    for i in range(n):
        prev = auditlog.new_entry(prev, actor=f"user{i % 3}", action="vote", request_id=i % 2 + 1,
                                  details={"output": "t1", "i": i, "files": [{"sha256": "ab" * 32}]},
                                  time=f"2026-07-22T10:00:0{i}.000000Z")
        out.append(prev)
    return out


def test_intact_chain_verifies():
    es = chain()
    r = auditlog.verify(es)
    assert r.ok and r.count == 6 and r.head == es[-1]["hash"] and r.first_broken_index is None
    assert auditlog.verify(es, expected_head=es[-1]["hash"]).ok
    assert auditlog.verify([]).ok and auditlog.verify([]).head == auditlog.GENESIS
    assert es[0]["prev_hash"] == auditlog.GENESIS and es[3]["prev_hash"] == es[2]["hash"]


@pytest.mark.parametrize("field,value", [
    ("actor", "mallory"), ("action", "approve"), ("time", "2026-07-22T11:00:00.000000Z"),
    ("request_id", 99), ("details", {"output": "t1", "i": 3, "files": []}),
])
def test_edited_entry_detected(field, value):
    es = chain()
    es[3][field] = value
    r = auditlog.verify(es)
    assert not r.ok and r.first_broken_index == 3 and r.first_broken_seq == 4
    assert "edited" in r.reason


def test_edited_and_rehashed_entry_breaks_the_next_link():
    es = chain()
    es[2]["actor"] = "mallory"
    es[2]["hash"] = auditlog.entry_hash(es[2])
    r = auditlog.verify(es)
    assert not r.ok and r.first_broken_index == 3 and "prev_hash" in r.reason


def test_deleted_entry_detected():
    es = chain()
    del es[2]
    r = auditlog.verify(es)
    assert not r.ok and r.first_broken_index == 2 and "removed" in r.reason


def test_deleted_and_renumbered_entry_detected():
    es = chain()
    del es[2]
    for e in es[2:]:
        e["seq"] -= 1
    r = auditlog.verify(es)
    assert not r.ok and r.first_broken_index == 2


def test_inserted_entry_detected():
    es = chain()
    forged = auditlog.new_entry(es[1], actor="mallory", action="approve", request_id=1)
    es.insert(2, forged)
    for e in es[3:]:
        e["seq"] += 1
    r = auditlog.verify(es)
    assert not r.ok and r.first_broken_index == 3


def test_reordered_entries_detected():
    es = chain()
    es[2], es[3] = es[3], es[2]
    r = auditlog.verify(es)
    assert not r.ok and r.first_broken_index == 2
    es = chain()
    es[2], es[3] = es[3], es[2]
    es[2]["seq"], es[3]["seq"] = 3, 4        # renumbered too: the links still break
    r = auditlog.verify(es)
    assert not r.ok and r.first_broken_index == 2


def test_truncated_tail_needs_the_head():
    es = chain()
    head = es[-1]["hash"]
    assert auditlog.verify(es[:-1]).ok               # the known limit of a bare chain
    r = auditlog.verify(es[:-1], expected_head=head)
    assert not r.ok and "head" in r.reason


def test_entries_are_validated():
    with pytest.raises(ValueError, match="unknown audit action"):
        auditlog.new_entry(None, actor="a", action="hack")
    with pytest.raises(ValueError, match="actor"):
        auditlog.new_entry(None, actor="", action="view")
    with pytest.raises(ValueError, match="non-finite"):
        auditlog.new_entry(None, actor="a", action="view", details={"x": float("nan")})
    with pytest.raises(ValueError, match="not JSON"):
        auditlog.new_entry(None, actor="a", action="view", details={"x": object()})
    e = auditlog.new_entry(None, actor="a", action="view", details={"t": (1, 2)})
    assert e["details"] == {"t": [1, 2]} and e["time"].endswith("Z")


@given(st.integers(min_value=1, max_value=8), st.data())
def test_any_single_change_is_found_at_or_before_it(n, data):
    es = chain(n)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    bad = copy.deepcopy(es)
    bad[i]["details"]["i"] = -1
    r = auditlog.verify(bad)
    assert not r.ok and r.first_broken_index == i
