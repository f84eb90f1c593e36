"""The registry area: MLflow tracking, registered versions with their evidence, the champion and
challenger aliases under the promotion rules, review, attempts and re-evaluation."""
