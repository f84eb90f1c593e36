"""The robustness area: the attack suite run as a per-sample worst case, the evaluation-trust
checks, the accuracy-vs-eps curves, perceptual alignment and the gate rules."""
