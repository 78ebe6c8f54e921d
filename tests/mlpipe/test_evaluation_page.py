"""The evaluation page and the registry's version description of a multi-class run (pure:
a ledger entry in, HTML and markdown out; in-process)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from mlpipe import evaluation_page, model_card
from mlpipe.metric_functions import per_class
from mlpipe.records import LedgerEntry, Window

WINDOW = Window(dt.date(2015, 1, 1), dt.date(2015, 3, 1), dt.date(2015, 4, 1))
CLASSES = ["chicken", "classic", "veggie"]


def _entry() -> LedgerEntry:
    y = np.array([0, 0, 1, 1, 1, 2])
    scores = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1],
                       [0.2, 0.2, 0.6]])
    figures = per_class(y, scores, CLASSES)
    return LedgerEntry(kind="train", pipeline="pizza", model="pizza", mode="live", decision="promote",
                       reason="first", window=WINDOW, metric="log_loss", winner="hgb", champion_after="1", confidence=0.95,
                       candidates={"hgb": {"version": "1", "backend": "sklearn_hgb",
                                           "metrics": {"log_loss": 0.6, "accuracy": 0.67}, "per_class": figures}},
                       seq=1)


def test_per_class_figures_and_the_confusion_matrix_are_computed_per_class():
    figures = _entry().candidates["hgb"]["per_class"]
    assert figures["confusion"] == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]  # rows: true, columns: predicted
    assert figures["support"] == [2, 3, 1]
    assert figures["precision"] == [0.5, round(2 / 3, 6), 1.0] and figures["recall"] == [0.5, round(2 / 3, 6), 1.0]


def test_the_page_shows_each_candidates_confusion_matrix_and_per_class_table():
    page = evaluation_page.render(_entry(), {})
    assert "hgb: per class" in page and "true \\ predicted" in page
    assert "<tr><th>chicken</th><td>1</td><td>1</td><td>0</td></tr>" in page
    assert "<tr><th>classic</th><td>0.667</td><td>0.667</td><td>0.667</td><td>3</td></tr>" in page


def test_the_version_description_lists_the_classes_and_their_figures():
    text = model_card.version_description(_entry(), "hgb", "reports/evaluation/1.html", None)
    assert "| Classes | `chicken`, `classic`, `veggie` |" in text
    assert "`classic` 0.667 / 0.667 (3 rows)" in text
