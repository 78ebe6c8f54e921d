# Images for docker-compose.yaml: `cpu` (every Airflow service, MLflow, the CPU worker)
# and `gpu` (the GPU worker: CUDA builds of torch and TensorFlow at the CPU pins' versions).
ARG AIRFLOW_VERSION=3.3.2
FROM apache/airflow:${AIRFLOW_VERSION}-python3.11 AS cpu
COPY requirements.txt requirements-data.txt /tmp/
RUN pip install --no-cache-dir -r /tmp/requirements.txt \
 && pip install --no-cache-dir --no-deps -r /tmp/requirements-data.txt
# The project package, installed editable from the path compose mounts ./include on.
COPY --chown=airflow:0 pyproject.toml /opt/airflow/pyproject.toml
COPY --chown=airflow:0 include /opt/airflow/include
RUN pip install --no-cache-dir --no-deps -e /opt/airflow

FROM cpu AS gpu
COPY requirements-gpu.txt /tmp/requirements-gpu.txt
RUN pip uninstall -y tensorflow-cpu \
 && pip install --no-cache-dir -r /tmp/requirements-gpu.txt
