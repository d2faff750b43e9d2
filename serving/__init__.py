"""The prediction service: production and canary models, prediction log, health."""
