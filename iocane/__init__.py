"""iocane: harden image classifiers against adversarial examples, prove it, and gate promotion."""

__version__ = "0.1.0"
