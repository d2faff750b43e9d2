"""Pipeline steps of churnops: plain Python, no Airflow."""
