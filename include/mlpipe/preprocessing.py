"""The fitted preprocessing every backend consumes, saved as plain JSON (no pickle).

Numeric columns: median imputation, standardisation, plus a missing-indicator for each
column that had nulls at fit time. Categorical columns: integer codes by frequency
(1..K, at most ``max_categories``); 0 means missing or unseen at fit time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mlpipe.errors import NotFittedError


@dataclass(frozen=True)
class Encoded:
    """Model inputs: a float32 numeric block and an int64 block of category codes."""

    numeric: np.ndarray
    categorical: np.ndarray
    cardinalities: tuple[int, ...]  # codes per categorical column, including 0

    def __len__(self) -> int:
        return len(self.numeric)


class Preprocessor:
    def __init__(self, numeric: list[str], categorical: list[str], max_categories: int = 254):
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.max_categories = max_categories

    def fit(self, frame: pd.DataFrame) -> Preprocessor:
        num = frame[self.numeric].astype("float64")
        self.medians_ = num.median().fillna(0.0).to_dict()
        filled = num.fillna(self.medians_)
        self.means_ = filled.mean().to_dict()
        self.scales_ = filled.std(ddof=0).replace(0.0, 1.0).fillna(1.0).to_dict()
        self.indicators_ = [c for c in self.numeric if num[c].isna().any()]
        self.vocab_ = {}
        for column in self.categorical:
            counts = frame[column].dropna().astype(str).value_counts()
            top = counts.sort_index().sort_values(ascending=False, kind="stable").index[: self.max_categories]
            self.vocab_[column] = list(top)
        self._lookups_ = None
        return self

    def _check(self) -> None:
        if not hasattr(self, "vocab_"):
            raise NotFittedError("Preprocessor is not fitted: call fit() first")

    @property
    def output_numeric(self) -> list[str]:
        self._check()
        return [*self.numeric, *(f"{c}__missing" for c in self.indicators_)]

    def transform(self, frame: pd.DataFrame | Mapping[str, Sequence]) -> Encoded:
        """``frame``: a feature frame, or features as columns (a serving request's: numbers,
        text and None; ``mlpipe.online.plain_features``)."""
        self._check()
        missing = [c for c in [*self.numeric, *self.categorical] if c not in frame]
        if missing:
            raise KeyError(f"input lacks feature columns {missing}")
        n = len(frame) if isinstance(frame, pd.DataFrame) else len(next(iter(frame.values())))
        # column by column on numpy: the same float64 operations as on the frame, without
        # pandas' fixed cost per operation (a one-row request pays it ten times over)
        num = np.empty((n, len(self.numeric)), dtype="float64")
        for j, column in enumerate(self.numeric):
            values = frame[column]
            if not isinstance(values, pd.Series):
                num[:, j] = values  # numbers and None (NaN)
                continue
            if not pd.api.types.is_numeric_dtype(values):
                values = pd.to_numeric(values, errors="coerce")
            num[:, j] = values.to_numpy(dtype="float64", na_value=np.nan)
        missing_at = np.isnan(num)
        flags = missing_at[:, [self.numeric.index(c) for c in self.indicators_]].astype("float64")
        medians, means, scales = (np.array([table[c] for c in self.numeric], dtype="float64")
                                  for table in (self.medians_, self.means_, self.scales_))
        scaled = (np.where(missing_at, medians, num) - means) / scales
        numeric = np.hstack([scaled, flags]).astype("float32") if self.numeric else np.zeros((n, 0), "float32")
        codes = np.zeros((n, len(self.categorical)), dtype="int64")
        for j, column in enumerate(self.categorical):
            lookup = self._lookups()[column]
            values = frame[column]
            if not isinstance(values, pd.Series):  # text and None
                codes[:, j] = [0 if v is None else lookup.get(v, 0) for v in values]
                continue
            codes[:, j] = [0 if null else lookup.get(str(v), 0)
                           for v, null in zip(values.tolist(), values.isna().to_numpy(), strict=True)]
        cards = tuple(len(self.vocab_[c]) + 1 for c in self.categorical)
        return Encoded(numeric, codes, cards)

    def _lookups(self) -> dict[str, dict[str, int]]:
        """Each categorical column's code per category (made once, not per transform)."""
        if getattr(self, "_lookups_", None) is None:
            self._lookups_ = {c: {v: i + 1 for i, v in enumerate(self.vocab_[c])} for c in self.categorical}
        return self._lookups_

    def save(self, directory: str | Path) -> None:
        self._check()
        state = {"numeric": self.numeric, "categorical": self.categorical, "max_categories": self.max_categories,
                 "medians": self.medians_, "means": self.means_, "scales": self.scales_,
                 "indicators": self.indicators_, "vocab": self.vocab_}
        Path(directory, "preprocessor.json").write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> Preprocessor:
        state = json.loads(Path(directory, "preprocessor.json").read_text())
        pre = cls(state["numeric"], state["categorical"], state["max_categories"])
        pre.medians_, pre.means_, pre.scales_ = state["medians"], state["means"], state["scales"]
        pre.indicators_, pre.vocab_ = state["indicators"], state["vocab"]
        return pre
