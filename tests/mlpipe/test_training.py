"""Training logic that needs no data: the order in which a train run's variants start."""

from __future__ import annotations

from types import SimpleNamespace

from mlpipe import training


def test_slowest_first_orders_by_last_fit_time_and_untrained_variants_lead():
    tracking = SimpleNamespace(experiment=lambda name: "1",
                               recent_fit_seconds=lambda experiment: {"small": 3.0, "big": 30.0, "mid": 9.0})
    ctx = SimpleNamespace(settings=None, spec=SimpleNamespace(name="toy"), tracking=tracking)

    order = training.slowest_first(ctx, ["small", "new", "mid", "big", "newer"])

    assert order == ["new", "newer", "big", "mid", "small"]  # never trained: spec order, first
