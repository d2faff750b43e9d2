-- The score store lives beside Airflow's metadata, in its own database.
CREATE DATABASE churnops OWNER airflow;
