"""The promotion ledger: numbered, append-only, safe under concurrent writers."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from mlpipe import ledger
from mlpipe.records import LedgerEntry


def entry(fields: dict) -> LedgerEntry:
    """A ledger entry with placeholders for the fields a test does not care about."""
    return LedgerEntry(**{"kind": "train", "pipeline": "p", "model": "m", "mode": "live", "decision": "keep",
                          "reason": "", **fields})


def test_entries_are_numbered_timestamped_and_read_in_order(store):
    assert ledger.entries(store) == []
    first = ledger.append(store, entry({"kind": "train", "decision": "promote"}))
    second = ledger.append(store, entry({"kind": "rollback", "decision": "rollback"}))
    assert (first.seq, second.seq) == (1, 2)
    assert first.time.endswith("+00:00")
    assert [e.kind for e in ledger.entries(store)] == ["train", "rollback"]
    assert sorted(p.name for p in ledger.ledger_dir(store).glob("*.json")) == ["000001.json", "000002.json"]
    assert not list(ledger.ledger_dir(store).glob("*.tmp"))


def test_newest_first_reads_back_only_as_far_as_asked(store, monkeypatch):
    """A score or monitor day after years of weekly trains reads the entries after the one it
    wants, not the whole ledger."""
    for i in range(30):
        ledger.append(store, entry({"decision": "promote" if i == 25 else "keep", "reason": str(i)}))
    read = []
    real = ledger.read_json
    monkeypatch.setattr(ledger, "read_json", lambda path: read.append(path) or real(path))
    found = next(e for e in ledger.newest_first(store) if e.decision == "promote")
    assert (found.seq, found.reason) == (26, "25") and len(read) == 5
    assert [e.seq for e in ledger.newest_first(store)] == list(range(30, 0, -1))


def test_an_existing_entry_is_never_overwritten(store, monkeypatch):
    ledger.append(store, entry({"kind": "train", "decision": "keep"}))
    original = (ledger.ledger_dir(store) / "000001.json").read_text()
    # a writer that believes it is first (a stale directory listing) still cannot replace entry 1
    monkeypatch.setattr(ledger, "listing", lambda folder: [])
    stored = ledger.append(store, entry({"kind": "train", "decision": "promote"}))
    monkeypatch.undo()
    assert stored.seq == 2
    assert (ledger.ledger_dir(store) / "000001.json").read_text() == original


def _append_many(store, tag, count):
    for i in range(count):
        ledger.append(store, entry({"kind": "train", "decision": "keep", "reason": f"{tag}:{i}"}))


def test_concurrent_writers_lose_nothing(store):
    mp = multiprocessing.get_context("spawn")
    procs = [mp.Process(target=_append_many, args=(store, tag, 15)) for tag in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    items = ledger.entries(store)
    assert [e.seq for e in items] == list(range(1, 46))
    assert sorted(e.reason for e in items) == sorted(f"{t}:{i}" for t in "abc" for i in range(15))


def test_previous_champion_follows_the_moves(store):
    ledger.append(store, entry({"kind": "train", "decision": "promote", "moved": True, "champion_before": None,
                          "champion_after": "1"}))
    ledger.append(store, entry({"kind": "train", "decision": "keep", "moved": False, "champion_before": "1",
                          "champion_after": "1"}))
    ledger.append(store, entry({"kind": "train", "decision": "promote", "moved": True, "champion_before": "1",
                          "champion_after": "3"}))
    assert ledger.previous_champion(store, "3") == "1"
    assert ledger.previous_champion(store, "1") is None  # v1 was the first champion
    assert ledger.previous_champion(store, "7") is None  # set outside the pipeline: unknown


def test_repeated_previous_rollbacks_walk_back_instead_of_flipping(store):
    for before, after in ((None, "1"), ("1", "4"), ("4", "5")):
        ledger.append(store, entry({"kind": "train", "moved": True, "champion_before": before, "champion_after": after}))
    assert ledger.previous_champion(store, "5") == "4"
    ledger.append(store, entry({"kind": "rollback", "moved": True, "champion_before": "5", "champion_after": "4"}))
    assert ledger.previous_champion(store, "4") == "1"  # not back to 5
    ledger.append(store, entry({"kind": "rollback", "moved": True, "champion_before": "4", "champion_after": "9"}))
    assert ledger.previous_champion(store, "9") == "4"  # an explicit rollback target: undo that rollback


def test_cli_prints_a_table_or_json(store, capsys, monkeypatch):
    from mlpipe import context

    ledger.append(store, entry({"kind": "train", "decision": "promote", "moved": True, "champion_before": None,
                          "champion_after": "2", "run_id": "manual__x", "reason": "no champion yet"}))
    ledger.append(store, entry({"kind": "rollback", "decision": "rollback", "moved": True, "champion_before": "2",
                          "champion_after": "1", "run_id": "manual__y", "reason": "bad week"}))
    monkeypatch.setattr(context.Context, "for_cli", classmethod(lambda cls, name: type("C", (), {"store": store})()))
    ledger.main([])
    table = capsys.readouterr().out.splitlines()
    assert "vNone->v2" in table[1] and "manual__x" in table[1] and table[2].endswith("bad week")
    ledger.main(["--json", "--last", "1"])
    assert [e["seq"] for e in json.loads(capsys.readouterr().out)] == [2]


def test_the_lock_is_exclusive(store):
    with ledger.locked(store), pytest.raises(TimeoutError), ledger.locked(store, timeout=0.2):
        pass
