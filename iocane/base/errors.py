"""Exit codes and one-line messages for the errors a user can cause.

3 means the gate failed (or a promotion was refused): the model is not good enough yet.
2 means bad input (params, data, model files, model URIs, a login the tracking server refuses):
fix the named thing and run again.
128 + N means signal N stopped the run (130 for SIGINT, 143 for SIGTERM), as a shell reports it;
the message says what was saved.
1 means anything else; the traceback is printed because it is a bug or an environment problem,
except for an MLflow server that did not answer (``RegistryUnreachable``): one line names it.
"""

from __future__ import annotations

import sys
import traceback

from iocane.base.config import ConfigError
from iocane.base.files import OutsideProject
from iocane.base.interrupts import Interrupted

GATE_FAILED = 3
BAD_INPUT = 2
OTHER_ERROR = 1


# The error classes live here, not beside the code that raises them, so that the CLI can map an
# error to its exit code without importing torch: bad params fail in well under a second.


class DataError(ValueError):
    """Bad or missing data; the message names the dataset and the file or directory."""


class ModelFileError(ValueError):
    """A model file that is missing, unsafe, or does not fit its declared architecture."""


class ModelSourceError(ValueError):
    """A ``model.name`` naming no buildable network, or ``model.weights`` that do not fit it."""


class ModelUriError(ValueError):
    """A registry URI naming a model, version or alias that does not exist."""


class TrackingLoginError(ValueError):
    """The MLflow tracking server refused the login (MLFLOW_TRACKING_USERNAME / _PASSWORD)."""


class TrainingDiverged(RuntimeError):
    """The training loss or the weights became non-finite; the message names epoch and step."""


class NotLearning(RuntimeError):
    """Clean accuracy still at chance after the first epoch; the message names the likely cause."""


class RegistryUnreachable(RuntimeError):
    """The MLflow tracking server did not answer through every retry of the register stage; the
    message names the server and says that a rerun registers the model already trained."""


USER_ERRORS = (
    ConfigError,
    DataError,
    ModelFileError,
    ModelSourceError,
    ModelUriError,
    TrackingLoginError,
    OutsideProject,
    FileNotFoundError,
)
# Not the user's input, but fully explained by its message: no traceback.
EXPLAINED_ERRORS = (*USER_ERRORS, TrainingDiverged, NotLearning, RegistryUnreachable, Interrupted)


def exit_code_for(error: BaseException) -> int:
    if isinstance(error, Interrupted):
        return error.exit_code
    return BAD_INPUT if isinstance(error, USER_ERRORS) else OTHER_ERROR


def report_error(error: BaseException) -> None:
    if isinstance(error, EXPLAINED_ERRORS):
        print(f"error: {error}", file=sys.stderr)
    else:
        traceback.print_exception(error)
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
