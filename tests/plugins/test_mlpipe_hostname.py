from __future__ import annotations

import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

from mlpipe_hostname import hostname  # noqa: E402


def test_a_worker_named_by_the_environment_reports_that_name(monkeypatch):
    monkeypatch.setenv("MLPIPE_HOSTNAME", "node1-gpu")
    assert hostname() == "node1-gpu"


def test_without_a_name_it_is_airflows_default_fqdn(monkeypatch):
    monkeypatch.delenv("MLPIPE_HOSTNAME", raising=False)
    assert hostname() == socket.getfqdn()
