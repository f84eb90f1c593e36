"""The sweep's engine, one idea a module: the grid of points and the warmups they share
(``grid``), the Pareto front of clean against robust accuracy (``pareto``), the ranking (the most
robust above a clean-accuracy floor, ``ranking``), the Prefect task runner the params name
(``runner``), and the snapshot of the prepared data and the links the points share (``links``).
``flows/sweep.py`` wires them; the summary files are ``iocane.reports.sweep_summary``'s and the
MLflow runs ``iocane.registry.sweep_runs``'.

Every point is judged at the same threat model, the params' ``train.norm`` and ``train.eps``,
whatever eps it trained at: robust accuracies at different eps cannot be compared, and their
Pareto front would mean nothing.
"""
