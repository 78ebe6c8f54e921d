"""Traffic policies (mlpipe.serving.policy): pure functions, in-process."""

from __future__ import annotations

import numpy as np

from mlpipe.serving import policy


def test_arms_are_sticky_shares_hold_and_a_growing_share_keeps_its_keys():
    keys = [f"user-{i}" for i in range(20000)]
    five, quarter = policy.to_challenger(keys, 0.05, "p"), policy.to_challenger(keys, 0.25, "p")
    assert abs(five.mean() - 0.05) < 0.01 and abs(quarter.mean() - 0.25) < 0.015
    assert (policy.to_challenger(keys, 0.05, "p") == five).all()  # the same key, the same arm
    assert not (five & ~quarter).any()  # a canary key stays in the canary when its share grows
    other = policy.to_challenger(keys, 0.25, "q")  # another pipeline draws its own arms
    assert 0.1 < (quarter & other).sum() / quarter.sum() < 0.4
    assert not policy.to_challenger(keys, 0.0, "p").any()


def test_the_challenger_share_of_each_policy():
    running = {"status": "running", "challenger": "7", "share": 0.25}
    assert policy.challenger_share("champion", 0.1, running, "7") == 0.0
    assert policy.challenger_share("shadow", 0.1, running, "7") == 0.0  # scores every row, answers none
    assert policy.challenger_share("ab", 0.1, None, "7") == 0.1
    assert policy.challenger_share("ab", 0.1, None, None) == 0.0
    assert policy.challenger_share("canary", 0.1, running, "7") == 0.25
    assert policy.challenger_share("canary", 0.1, running, "8") == 0.0  # a canary of another version
    assert policy.challenger_share("canary", 0.1, {**running, "status": "rolled_back"}, "7") == 0.0
    assert policy.challenger_share("canary", 0.1, None, "7") == 0.0
    assert policy.challenger_role("canary") == "canary" and policy.challenger_role("ab") == "challenger"
    assert np.isclose(policy.position(["a"], "p")[0], policy.position(["a"], "p")[0])
