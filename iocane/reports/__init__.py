"""The reports area: what people read: the robustness report, the model card, the figures, the
cost, and the Prefect artifacts. The report's and the cards' text is in ``templates/`` (Jinja2,
``templating.py``)."""
