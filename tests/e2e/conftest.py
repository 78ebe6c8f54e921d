"""Fixtures shared by the end-to-end modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def alerts(serve_webhook):
    """A webhook on 127.0.0.1 collecting the alerts a module's cluster sends (one per module)."""
    with serve_webhook() as hook:
        yield hook
