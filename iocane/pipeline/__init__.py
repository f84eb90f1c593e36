"""The pipeline area: the Prefect cache keys read from dvc.yaml, the content-addressed store of
stage outputs, retries, and the sweep's engine (``iocane.pipeline.sweep``: grid, Pareto front,
ranking, task runner, shared files)."""
