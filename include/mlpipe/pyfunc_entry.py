"""MLflow models-from-code entry point: the logged model is this file plus the bundle
artifact, so loading a model never unpickles a Python object."""

import mlflow

from mlpipe.registry import BundleModel

mlflow.models.set_model(BundleModel())
