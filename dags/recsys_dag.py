"""The pipeline's Airflow DAG (dag_id `recsys`); this folder is Airflow's DAGs folder.

Configured by the RECSYS_* environment variables described in pipeline/airflow_runner.py.
"""

from pipeline.airflow_runner import create_dag

DAG = create_dag()
