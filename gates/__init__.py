"""The ML Test Score: the 28 rubric tests, the gates that score them, and the report."""
