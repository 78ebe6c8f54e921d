import math

import pytest

from mlpipe.backends.neural import NeuralBackend
from mlpipe.errors import TrainingError


def stopping(losses, **params):
    """Run NeuralBackend._early_stopping over a scripted sequence of validation losses;
    return (best snapshot, epochs run)."""
    model = NeuralBackend(task="binary", **params)
    epochs, seen = [], iter(losses)
    best = model._early_stopping(lambda: epochs.append(len(epochs)), lambda: next(seen), lambda: len(epochs) - 1)
    return best, len(epochs)


def test_keeps_the_best_epoch_and_stops_after_patience():
    assert stopping([0.9, 0.5, 0.6, 0.55, 0.7, 0.1], patience=3) == (1, 5)


def test_improvements_below_the_tolerance_do_not_count():
    assert stopping([0.5, 0.499995, 0.499991, 0.3], patience=2) == (0, 3)


def test_stops_at_max_epochs():
    assert stopping([1.0, 0.9, 0.8, 0.7], max_epochs=3, patience=5) == (2, 3)


def test_never_finite_loss_is_a_clear_error():
    with pytest.raises(TrainingError, match="validation loss was never finite"):
        stopping([math.nan] * 3, patience=2)
