"""The promotion ledger: every train decision and rollback, in order, append-only.

Each entry is one JSON file (one object, on object storage)
``<data root>/<pipeline>/ledger/<seq>.json``, created exclusively (``atomic_write(...,
exclusive=True)``) so an existing entry can never be replaced, and never rewritten; the
ledger is read by listing that prefix. Decisions that may move an alias run under
:func:`locked`, one at a time per pipeline on every host (see :mod:`mlpipe.locks`).

Read it with ``python -m mlpipe.ledger`` (``--json`` for the raw entries).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager

from mlpipe.records import LedgerEntry
from mlpipe.storage import Location, Store, atomic_write, listing, read_json

LOCK_TIMEOUT_S = 3600


def ledger_dir(store: Store) -> Location:
    return store.base / "ledger"


@contextmanager
def locked(store: Store, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the pipeline's promotion lock (released if the holder dies, on any host)."""
    with store.lock("promotion", timeout):
        yield


def _seqs(store: Store) -> list[int]:
    return sorted(int(n[:-5]) for n in listing(ledger_dir(store)) if n.endswith(".json") and n[:-5].isdigit())


def entries(store: Store) -> list[LedgerEntry]:
    return [LedgerEntry.from_dict(read_json(entry_path(store, seq))) for seq in _seqs(store)]


def newest_first(store: Store) -> Iterator[LedgerEntry]:
    """The entries from the latest back, each read only when reached: a reader that wants
    the latest entry of some kind reads what came after it, not years of entries."""
    for seq in reversed(_seqs(store)):
        yield LedgerEntry.from_dict(read_json(entry_path(store, seq)))


def entry_path(store: Store, seq: int) -> Location:
    return ledger_dir(store) / f"{seq:06d}.json"


def append(store: Store, entry: LedgerEntry) -> LedgerEntry:
    """Store ``entry`` with the next sequence number and the time; return it as stored."""
    seq = max(_seqs(store), default=0) + 1
    while True:
        stored = dataclasses.replace(entry, seq=seq,
                                     time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        try:
            atomic_write(entry_path(store, seq), json.dumps(stored.to_dict(), indent=2, default=str), exclusive=True)
            return stored
        except FileExistsError:  # another writer took this number: never overwritten, take the next
            seq += 1


def write_pending(store: Store, entry: LedgerEntry, moves: list[tuple[str, str | None, str | None]]) -> None:
    """Record a commit's intent before it moves any alias: the entry it will append and
    its moves ``(alias, new, old)``. A commit cut short (its process killed, the tracking
    server gone while undoing) leaves it behind for the next commit to complete."""
    atomic_write(ledger_dir(store) / "pending.json", json.dumps({"entry": entry.to_dict(), "moves": moves}, default=str))


def pending(store: Store) -> tuple[LedgerEntry, list[tuple[str, str | None, str | None]]] | None:
    path = ledger_dir(store) / "pending.json"
    if not path.exists():
        return None
    found = read_json(path)
    return LedgerEntry.from_dict(found["entry"]), [tuple(m) for m in found["moves"]]


def clear_pending(store: Store) -> None:
    try:
        (ledger_dir(store) / "pending.json").unlink()
    except FileNotFoundError:
        pass


def previous_champion(store: Store, current: str | None) -> str | None:
    """The version that was champion before ``current`` was promoted by a train run (or
    the last step of a canary).

    Rollbacks do not count as promotions, so repeated "previous" rollbacks walk back
    through the promotion history (v5 -> v4 -> v1) instead of flipping between two
    versions. A ``current`` that only a rollback made champion (an explicit version)
    goes back to the champion that rollback replaced.
    """
    moves = [e for e in entries(store) if e.moved and e.champion_after == current]
    promotions = [e for e in moves if e.kind in ("train", "canary")]
    last = (promotions or moves or [None])[-1]
    return last.champion_before if last else None


def recorded_hash(store: Store, version: str) -> str | None:
    """The bundle hash the ledger recorded when ``version`` was a train run's candidate."""
    for entry in newest_first(store):
        for candidate in entry.candidates.values():
            if str(candidate.get("version")) == str(version) and candidate.get("sha256"):
                return candidate["sha256"]
    return None


def format_entries(items: list[LedgerEntry]) -> str:
    lines = [f"{'seq':>4}  {'time':<25} {'kind':<9} {'decision':<15} {'champion':<11} {'run':<40} reason"]
    for e in items:
        champion = f"v{e.champion_before}->v{e.champion_after}" if e.moved else f"v{e.champion_after}"
        lines.append(f"{e.seq:>4}  {e.time:<25} {e.kind:<9} {e.decision:<15} {champion:<11} "
                     f"{e.run_id or '-':<40} {e.reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from mlpipe.context import Context

    parser = argparse.ArgumentParser(prog="python -m mlpipe.ledger", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the entries as JSON")
    parser.add_argument("--last", type=int, default=0, help="only the last N entries")
    parser.add_argument("--pipeline", help="the pipeline's name (default: the only one, when there is one)")
    args = parser.parse_args(argv)
    items = entries(Context.for_cli(args.pipeline).store)
    items = items[-args.last:] if args.last else items
    print(json.dumps([e.to_dict() for e in items], indent=2) if args.json else format_entries(items))


if __name__ == "__main__":
    main()
