"""The preloading executor imports its module list before starting workers."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

from airflow.executors.local_executor import LocalExecutor  # noqa: E402

from mlpipe_executor import PreloadingLocalExecutor  # noqa: E402


def test_preloads_before_forking_workers(monkeypatch):
    seen = {}
    monkeypatch.setenv("MLPIPE_PRELOAD", "colorsys, not_a_module_xyz")
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    monkeypatch.setattr(LocalExecutor, "start", lambda self: seen.setdefault("loaded", "colorsys" in sys.modules))

    PreloadingLocalExecutor(parallelism=1).start()  # a missing module is logged, not fatal

    assert seen == {"loaded": True}
