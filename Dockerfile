# One image for every churnops service: Airflow components, Celery workers, serving.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/churnops/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/churnops/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    TF_CPP_MIN_LOG_LEVEL=2

RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/churnops
COPY requirements.txt pyproject.toml ./
RUN pip install -r requirements.txt
COPY . .
RUN pip install --no-deps -e .

RUN useradd --create-home churnops && mkdir -p /opt/airflow && chown -R churnops /opt
USER churnops
