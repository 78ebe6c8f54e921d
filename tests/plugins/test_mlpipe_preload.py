"""What the executors preload: the data stack and the spec's backends, safely forkable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
sys.path.insert(0, str(PLUGINS))

import mlpipe_preload  # noqa: E402


def test_default_list_is_the_data_stack_and_the_spec_backends(monkeypatch):
    monkeypatch.delenv("MLPIPE_PRELOAD", raising=False)
    found = mlpipe_preload.modules()
    assert found[:len(mlpipe_preload.DATA_STACK)] == list(mlpipe_preload.DATA_STACK)
    # the bundled spec trains scikit-learn, torch and TensorFlow variants
    assert {"skops.io", "sklearn.ensemble", "torch", "tensorflow"} <= set(found)
    assert len(found) == len(set(found))


def test_a_spec_without_a_backend_preloads_none_of_it(monkeypatch, tmp_path):
    spec = (Path(__file__).resolve().parents[2] / "include" / "pipelines" / "flights.yaml").read_text()
    only_sklearn = spec.split("  - name: mlp_torch\n")[0] + spec[spec.index("\n# Torch and TensorFlow"):]
    (tmp_path / "spec.yaml").write_text(only_sklearn)
    monkeypatch.setenv("MLPIPE_SPEC", str(tmp_path / "spec.yaml"))
    monkeypatch.delenv("MLPIPE_PRELOAD", raising=False)
    found = mlpipe_preload.modules()
    assert "skops.io" in found and "torch" not in found and "tensorflow" not in found


def test_every_pipeline_of_the_folder_adds_its_backends_and_a_bad_spec_none(monkeypatch, tmp_path):
    spec = (Path(__file__).resolve().parents[2] / "include" / "pipelines" / "flights.yaml").read_text()
    head, tail = spec.split("  - name: mlp_torch\n")[0], spec[spec.index("\n# Torch and TensorFlow"):]
    (tmp_path / "a.yaml").write_text(head + tail)  # scikit-learn only
    torch_only = spec.split("variants:\n")[0] + "variants:\n  - name: mlp_torch\n" + spec.split(
        "  - name: mlp_torch\n")[1].split("  - name: mlp_torch_small")[0] + tail
    (tmp_path / "b.yaml").write_text(torch_only.replace("name: flights", "name: other"))
    (tmp_path / "c.yaml").write_text("name: [broken")
    monkeypatch.delenv("MLPIPE_SPEC", raising=False)
    monkeypatch.setenv("MLPIPE_PIPELINES_DIR", str(tmp_path))
    monkeypatch.delenv("MLPIPE_PRELOAD", raising=False)
    found = mlpipe_preload.modules()
    assert "skops.io" in found and "torch" in found and "tensorflow" not in found


def test_override_and_missing_module(monkeypatch):
    monkeypatch.setenv("MLPIPE_PRELOAD", " colorsys , not_a_module_xyz,")
    assert mlpipe_preload.modules() == ["colorsys", "not_a_module_xyz"]
    assert mlpipe_preload.preload() == ["colorsys"]  # the missing one is logged, not raised
    monkeypatch.setenv("MLPIPE_PRELOAD", "")
    assert mlpipe_preload.preload() == []


def test_preloading_starts_no_thread_and_a_fork_can_use_it():
    """Forking a process with threads can deadlock its child: the default list must
    import without starting one, and a forked child must train with torch and TF."""
    code = f"""
import os, sys, threading
sys.path.insert(0, {str(PLUGINS)!r})
import mlpipe_preload
loaded = mlpipe_preload.preload()
assert {{"torch", "tensorflow", "skops.io", "mlflow.pyfunc"}} <= set(loaded), loaded
assert threading.active_count() == 1, threading.enumerate()
import gc
assert gc.get_freeze_count() > 100_000  # a child's collections never walk the preloaded objects
pid = os.fork()
if pid == 0:
    import numpy as np, tensorflow as tf, torch
    torch.nn.Linear(4, 1)(torch.randn(8, 4)).sum().backward()
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    model.compile("adam", "mse")
    model.fit(np.ones((8, 4)), np.ones(8), epochs=1, verbose=0)
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip().endswith("ok"), done.stderr[-3000:]
