"""The pipeline area: the Prefect cache keys read from dvc.yaml, the content-addressed store of
stage outputs, retries, and the sweep's engine."""
