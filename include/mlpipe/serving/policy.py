"""Which model answers each row of a request: the spec's traffic policy (``serving.policy``).

- ``champion``: the champion answers every row.
- ``shadow``: the champion answers; the challenger scores every row too (logged, not answered).
- ``ab``: the challenger answers ``serving.share`` of the rows.
- ``canary``: the challenger answers the share of the canary's current step
  (:mod:`mlpipe.serving.canary`), none when no canary runs for it.

An A/B or canary arm is drawn from a hash of the row's ``serving.key`` value (salted with
the pipeline's name), so a key always gets the same arm, and a key in the challenger's arm
stays in it when its share grows (the canary's steps).
"""

from __future__ import annotations

import hashlib

import numpy as np

CHAMPION, CHALLENGER, CANARY = "champion", "challenger", "canary"  # a row's arm (its role)


def challenger_share(policy: str, share: float, canary: dict | None, challenger: str | None) -> float:
    """The share of rows the challenger ``challenger`` answers under ``policy``; ``canary``:
    the canary's state (None: none running)."""
    if challenger is None:
        return 0.0
    if policy == "ab":
        return share
    if policy == "canary" and canary and canary.get("status") == "running" and canary.get("challenger") == challenger:
        return float(canary["share"])
    return 0.0


def challenger_role(policy: str) -> str:
    return CANARY if policy == "canary" else CHALLENGER


def position(keys, salt: str) -> np.ndarray:
    """Each key's place in [0, 1): uniform, the same for a key every time."""
    out = np.empty(len(keys))
    for i, key in enumerate(keys):
        digest = hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def to_challenger(keys, share: float, salt: str) -> np.ndarray:
    """Which rows (by their key values) the challenger answers at ``share``."""
    if share <= 0:
        return np.zeros(len(keys), dtype=bool)
    return position(keys, salt) < share
