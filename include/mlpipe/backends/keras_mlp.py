"""TensorFlow/Keras backend: the same tabular MLP idea as the torch backend (an embedding
per categorical column, early stopping on a seeded validation split), saved in the
native ``.keras`` format and loaded with Keras' safe mode."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from mlpipe.backends.neural import NeuralBackend
from mlpipe.preprocessing import Encoded

log = logging.getLogger(__name__)



def _tf(n_threads: int):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:  # only possible before TensorFlow's runtime starts; later calls keep the first setting
        tf.config.threading.set_intra_op_parallelism_threads(n_threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    return tf


def _device(tf) -> str:
    if tf.config.list_physical_devices("GPU"):
        return "gpu"
    log.warning("tensorflow backend: no GPU visible; training on the CPU")
    return "cpu"


class KerasMLP(NeuralBackend):
    framework = "tensorflow"
    fitted_attr = "model_"

    def _build(self, tf, n_numeric: int, cardinalities: list[int]):
        keras = tf.keras
        numeric = keras.Input(shape=(n_numeric,), name="numeric")
        columns = [keras.Input(shape=(1,), dtype="int32", name=f"cat{i}") for i in range(len(cardinalities))]
        parts = [numeric]
        for column, card in zip(columns, cardinalities, strict=True):
            dim = min(self._p("max_embedding_dim"), (card + 1) // 2 + 1)
            parts.append(keras.layers.Flatten()(keras.layers.Embedding(card, dim)(column)))
        x = keras.layers.Concatenate()(parts) if len(parts) > 1 else numeric
        for size in self._p("hidden"):
            x = keras.layers.Dense(size, activation="relu")(x)
            x = keras.layers.Dropout(self._p("dropout"), seed=self.seed)(x)
        activation = None if self.n_classes_ is None else "sigmoid" if self.units == 1 else "softmax"
        out = keras.layers.Dense(self.units, activation=activation)(x)
        return keras.Model([numeric, *columns], out)

    @staticmethod
    def _inputs(X: Encoded) -> list[np.ndarray]:
        cats = X.categorical.astype("int32")
        return [X.numeric.astype("float32"), *(cats[:, i:i + 1] for i in range(cats.shape[1]))]

    def fit(self, X: Encoded, y: np.ndarray) -> KerasMLP:
        tf = _tf(self.n_threads)
        self.device_ = _device(tf)
        tf.keras.utils.set_random_seed(self.seed)
        train, val, target = self._split(y)
        model = self._build(tf, X.numeric.shape[1], list(X.cardinalities))
        optimizer = tf.keras.optimizers.Adam(self._p("lr"))
        loss_fn = (tf.keras.losses.MeanSquaredError() if self.n_classes_ is None
                   else tf.keras.losses.BinaryCrossentropy() if self.units == 1
                   else tf.keras.losses.SparseCategoricalCrossentropy())
        head = (lambda out: out[:, 0]) if self.units == 1 else (lambda out: out)
        inputs, t = [tf.constant(a) for a in self._inputs(X)], tf.constant(target)
        weights, batch = model.trainable_variables, self._p("batch_size")

        # A whole epoch is one graph call. Keras' fit() feeds each batch from tf.data's
        # threads, and those per-batch hand-overs stall whenever another task holds the
        # other core: measured 24.4 s alone but 26.8 s wall for 23.0 s CPU beside one.
        @tf.function
        def epoch(order):
            for start in tf.range(0, tf.shape(order)[0], batch):
                rows = order[start:start + batch]
                with tf.GradientTape() as tape:
                    pred = head(model([tf.gather(a, rows) for a in inputs], training=True))
                    loss = loss_fn(tf.gather(t, rows), pred)
                optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))

        val_inputs, val_target = [tf.gather(a, val) for a in inputs], tf.gather(t, val)
        val_loss = tf.function(lambda: loss_fn(val_target, head(model(val_inputs, training=False))))
        rng = np.random.default_rng(self.seed)
        best = self._early_stopping(lambda: epoch(tf.constant(rng.permutation(train).astype("int32"))),
                                    lambda: float(val_loss()), model.get_weights)
        model.set_weights(best)
        self.model_ = model
        return self

    def _raw(self, X: Encoded) -> np.ndarray:
        self._check_fitted()
        out = self.model_.predict(self._inputs(X), verbose=0, batch_size=8192)
        return (out.reshape(-1) if self.units == 1 else out).astype("float64")

    def save(self, directory: Path) -> None:
        self._save_meta(directory)
        self.model_.save(Path(directory) / "model.keras")

    @classmethod
    def load(cls, directory: Path) -> KerasMLP:
        model, _ = cls._from_meta(directory)
        tf = _tf(model.n_threads)
        model.model_ = tf.keras.models.load_model(Path(directory) / "model.keras", compile=False, safe_mode=True)
        return model
