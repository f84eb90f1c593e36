"""The reports area: what people read: the robustness report, the model card, the figures, the
cost, and the Prefect artifacts."""
