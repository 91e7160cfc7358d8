# The Airflow image of the nightly: the official 3.3.2 image with this project's pinned
# requirements. Its dags/, plugins/ and include/ are mounted by docker-compose.yaml.
FROM apache/airflow:3.3.2
COPY --chown=airflow:root requirements.txt /opt/airflow/requirements.txt
RUN pip install --no-cache-dir -r /opt/airflow/requirements.txt
ENV PYTHONPATH=/opt/airflow
