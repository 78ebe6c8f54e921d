"""Target types: what differs between a binary, a regression and a multi-class target, in
one object each. How the label is derived from the target expression and encoded for the
backends, the model's output (one score, or a probability per class), the predicted label, the class check of a training split, the default gate metric and the metrics
the reports show. Every other module asks the spec's target type (``spec.target_type``)
instead of comparing ``target.task`` with a name; ``tests/test_architecture.py`` checks.

Importing this module imports neither numpy nor pandas (the spec check reads it at DAG
parse time); the methods that need them import them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class TargetType:
    name: ClassVar[str]
    classifier: ClassVar[bool] = True  # the backends predict class probabilities
    default_gate: ClassVar[str]
    headline: ClassVar[tuple[str, ...]]  # the metrics the reports' tables show, in order
    null_policies: ClassVar[tuple[str, ...]] = ("drop",)  # what ``when_null`` may say
    curves: ClassVar[bool] = False  # ROC, PR and calibration curves on the evaluation page
    history_stats: ClassVar[tuple[str, ...]] = ("target_mean", "count")  # history aggregates it allows
    estimates: ClassVar[bool] = False  # performance estimated before labels from calibrated scores
    has_classes: ClassVar[bool] = False  # named classes (``target.classes``), a probability column each

    def label(self, value, index) -> pd.Series:
        """The label of each row from the target expression's value (nulls stay null)."""
        import numpy as np
        import pandas as pd

        return pd.Series(np.asarray(value, dtype="float64"), index=index)

    def classes(self, labels: pd.Series, listed: list[str] | None) -> list[str] | None:
        """The classes a model of this target predicts (None: not a multi-class target)."""
        return None

    def encode(self, labels, classes: list[str] | None) -> np.ndarray:
        """The labels as the backends and the metrics take them."""
        import numpy as np

        return np.asarray(labels, dtype="float64")

    def metrics(self, labels, scores: np.ndarray, classes: list[str] | None = None) -> dict[str, float]:
        """Every metric of this target type (``mlpipe.metrics``) of a model's ``scores``
        against ``labels`` as stored; multi-class rows of a class the model does not know
        (``classes``) are left out."""
        from mlpipe.metrics import compute_metrics

        y = self.encode(labels, classes)
        known = y >= 0 if self.has_classes else slice(None)
        return compute_metrics(self.name, y[known], scores[known])

    def row_loss(self, labels, scores: np.ndarray, classes: list[str] | None = None) -> np.ndarray:
        """Each row's loss (lower is better), what a canary's sequential test compares:
        the squared error; a classifier's, the log loss of its label (probabilities clipped
        at 1e-15, as scikit-learn's log loss). Rows of a class the model does not know are
        left out."""
        import numpy as np

        y = self.encode(labels, classes)
        if not self.classifier:
            return (np.asarray(scores, dtype="float64") - y) ** 2
        probability = self._of_label(y, np.asarray(scores, dtype="float64"))
        return -np.log(np.clip(probability[~np.isnan(probability)], 1e-15, 1.0))

    def _of_label(self, y: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The probability each row's model gave its label (NaN: an unknown class)."""
        import numpy as np

        return np.where(y == 1, scores, 1.0 - scores)

    def per_class(self, labels, scores: np.ndarray, classes: list[str] | None) -> dict | None:
        """Figures per class (:func:`mlpipe.metric_functions.per_class`); None without classes."""
        return None

    def output(self, backend, X, classes: list[str] | None = None) -> np.ndarray:
        """The model's scores of encoded rows ``X``: one value per row, or (multi-class) a
        probability per class of ``classes``."""
        import numpy as np

        return np.asarray(backend.predict(X), dtype="float64")

    def predicted(self, scores: np.ndarray, classes: list[str] | None) -> np.ndarray | None:
        """The predicted label of each row (None: the target has no classes)."""
        return None

    def split_problem(self, labels: pd.Series, min_class_rows: int, classes: list[str] | None,
                      holdout: bool = False) -> str | None:
        """Why a training (or ``holdout``) split's labels cannot train (or judge) a model, or None."""
        return None


class Binary(TargetType):
    name = "binary"
    default_gate = "roc_auc"
    headline = ("roc_auc", "pr_auc", "log_loss", "brier", "f1")
    null_policies = ("drop", "positive", "negative")
    curves = True
    estimates = True

    def encode(self, labels, classes):
        import numpy as np

        return np.asarray(labels, dtype="float64").astype("int64")

    def output(self, backend, X, classes=None):
        return backend.predict_proba(X)[:, 1].astype("float64")

    def predicted(self, scores, classes):
        return scores >= 0.5

    def split_problem(self, labels, min_class_rows, classes, holdout=False):
        counts = labels.value_counts().reindex([0.0, 1.0], fill_value=0)
        if counts.min() < min_class_rows:
            return (f"has {int(counts[0.0])} negative and {int(counts[1.0])} positive rows; need at least "
                    f"{min_class_rows} of each class (training.min_class_rows)")
        return None


class Regression(TargetType):
    name = "regression"
    classifier = False
    default_gate = "rmse"
    headline = ("rmse", "mae", "r2")


class Multiclass(TargetType):
    """Labels are the classes as text. The classes are the spec's ``target.classes``, else
    those of the training window (sorted), recorded with each version; a model's scores
    are one probability per class in that order."""

    name = "multiclass"
    default_gate = "log_loss"
    headline = ("log_loss", "accuracy", "f1_macro", "roc_auc", "brier")
    history_stats = ("count",)  # a mean of class names means nothing
    has_classes = True

    def label(self, value, index):
        """The class as text; whole numbers as integers (a column of 1, 2, 3 with a null in
        it reads as floats, and its classes are still "1", "2", "3")."""
        import pandas as pd

        labels = pd.Series(value, index=index)
        if pd.api.types.is_bool_dtype(labels):
            labels = labels.astype("int64")
        elif pd.api.types.is_float_dtype(labels) and (labels.dropna() % 1 == 0).all():
            labels = labels.astype("Int64")
        return labels.astype("string")

    def classes(self, labels, listed):
        return list(listed) if listed else sorted(str(c) for c in labels.dropna().unique())

    def encode(self, labels, classes):
        """Each label's index in ``classes`` (-1: a class the version does not know)."""
        import numpy as np
        import pandas as pd

        return pd.Categorical(np.asarray(labels, dtype="object"), categories=classes).codes.astype("int64")

    def output(self, backend, X, classes=None):
        """A probability per class of ``classes``; a class the backend never saw in its
        training rows (``backend.classes_``: the indices it saw) gets 0."""
        import numpy as np

        proba = backend.predict_proba(X).astype("float64")
        seen = getattr(backend, "classes_", None)
        if classes is None or seen is None or proba.shape[1] == len(classes):
            return proba
        full = np.zeros((proba.shape[0], len(classes)))
        full[:, np.asarray(seen, dtype="int64")] = proba
        return full

    def predicted(self, scores, classes):
        import numpy as np

        return np.asarray(classes, dtype="object")[scores.argmax(axis=1)]

    def _of_label(self, y, scores):
        import numpy as np

        picked = scores[np.arange(len(y)), np.clip(y, 0, None)]
        return np.where(y >= 0, picked, np.nan)

    def per_class(self, labels, scores, classes):
        from mlpipe.metric_functions import per_class

        y = self.encode(labels, classes)
        return per_class(y[y >= 0], scores[y >= 0], classes)

    def split_problem(self, labels, min_class_rows, classes, holdout=False):
        """Training: two classes or more with ``min_class_rows`` rows each (rarer ones are
        learnt too), and a row of every class in ``classes``: a model cannot learn a class
        it never saw. Holdout: two classes or more. Either: no label outside ``classes``."""
        counts = labels.value_counts()
        unknown = sorted(set(counts.index) - set(classes or counts.index))
        if unknown:
            return f"has labels {unknown[:10]} that are not among target.classes {classes}"
        if holdout:
            return None if len(counts) >= 2 else f"has rows of {len(counts)} class(es); need two or more to judge"
        absent = [c for c in classes or [] if c not in counts.index]
        if absent:
            return (f"has no row of classes {absent} (a model cannot learn a class it never saw): widen the window "
                    "or leave them out of target.classes")
        if (counts >= min_class_rows).sum() < 2:
            return (f"has rows per class {dict(counts)}; need two classes or more with {min_class_rows} rows each "
                    "(training.min_class_rows)")
        return None


TARGETS: dict[str, TargetType] = {t.name: t for t in (Binary(), Regression(), Multiclass())}
NAMES = tuple(TARGETS)


def target_type(name: str) -> TargetType:
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown target type {name!r}; known: {list(TARGETS)}") from None
