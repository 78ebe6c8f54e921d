"""Training operators, one per model backend family (the backend table names each
backend's operator). Thin: keyword-only arguments, declared template fields, nothing
done in ``__init__``; ``execute`` delegates to ``mlpipe.training.train_variant`` through
``run_step``.

Torch and TensorFlow operators run on the spec's GPU queue and pool (``gpu`` by default;
MLPIPE_GPU_QUEUE / MLPIPE_GPU_POOL override the spec): the train DAG passes
``placement(spec)`` to ``partial()`` when it builds the DAG, so nothing reads the spec in
``__init__``. A DAG that builds one of them itself passes ``**Op.placement(spec)`` or its
own ``queue=``/``pool=``. ``spec`` is the path of the pipeline's spec file. Each task sizes its thread pools to ``cpus`` (default
MLPIPE_TASK_CPUS, else 1), so parallel variants do not oversubscribe the machine.
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseOperator

from mlpipe.records import Job
from mlpipe_dagkit import gpu_placement
from mlpipe_tasks import run_step


class TrainVariantOperator(BaseOperator):
    """Train one variant (a job from the train DAG's ``plan``) and register it in MLflow."""

    template_fields: Sequence[str] = ("job",)

    @classmethod
    def placement(cls, spec) -> dict:
        """Queue and pool kwargs for ``partial()`` (a mapped task takes them from there)."""
        return {}

    def __init__(self, *, job: dict, spec: str | None = None, cpus: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.job = job
        self.spec = spec
        self.cpus = cpus

    def execute(self, context):
        dag_run, ti, job = context["dag_run"], context["ti"], Job.from_dict(self.job)
        context["variant"] = job.variant
        return run_step("train_variant", self.spec, job=job, n_threads=self.cpus,  # None: MLPIPE_TASK_CPUS
                        run_tags={"airflow.dag_id": dag_run.dag_id, "airflow.run_id": dag_run.run_id,
                                  "airflow.task_id": ti.task_id, "airflow.map_index": str(ti.map_index),
                                  "airflow.try_number": str(ti.try_number),
                                  "airflow.queue": self.queue, "airflow.pool": self.pool})


class SklearnTrainOperator(TrainVariantOperator):
    """scikit-learn variants, on the default queue."""


class GpuTrainOperator(TrainVariantOperator):
    """Variants of a GPU-capable framework, on the spec's GPU queue and pool."""

    @classmethod
    def placement(cls, spec) -> dict:
        return gpu_placement(spec)


class TorchTrainOperator(GpuTrainOperator):
    """PyTorch variants."""


class TensorFlowTrainOperator(GpuTrainOperator):
    """TensorFlow / Keras variants."""


OPERATORS: dict[str, type[TrainVariantOperator]] = {
    cls.__name__: cls for cls in (TrainVariantOperator, SklearnTrainOperator, GpuTrainOperator, TorchTrainOperator,
                                  TensorFlowTrainOperator)}


def operator_named(name: str, family: str) -> type[TrainVariantOperator]:
    try:
        return OPERATORS[name]
    except KeyError:
        raise ValueError(f"backend family {family!r} names operator {name!r}, which mlpipe_operators does not "
                         f"define; known: {sorted(OPERATORS)}") from None
