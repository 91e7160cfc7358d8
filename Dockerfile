# The Airflow image of the nightly: the official 3.3.2 image with this project's pinned
# requirements, its code, and the docker CLI (BuildKit builds) and git (source resolution).
# docker-compose.yaml mounts dags/, plugins/ and include/ over the copies on its own host;
# a worker on another host runs this image as it is.
FROM apache/airflow:3.3.2
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends docker.io git \
 && rm -rf /var/lib/apt/lists/*
USER airflow
COPY --chown=airflow:root requirements.txt /opt/airflow/requirements.txt
RUN pip install --no-cache-dir -r /opt/airflow/requirements.txt
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root include /opt/airflow/include
ENV PYTHONPATH=/opt/airflow
