-- Run once by the postgres image on a new volume: MLflow's backend store beside Airflow's.
CREATE DATABASE mlflow;
