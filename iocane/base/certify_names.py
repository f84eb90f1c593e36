"""The certification methods by name, for the config (which must not import torch).

``evaluate.certify.bounds`` lists bound methods of ``iocane.certify`` (interval bound propagation
and the linear relaxation CROWN, weakest first); a test holds this tuple equal to
``iocane.certify.BOUND_METHODS``, so a method added there is added here too.
"""

from __future__ import annotations

BOUND_METHODS = ("ibp", "crown")
