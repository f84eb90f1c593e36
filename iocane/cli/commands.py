"""The commands of ``iocane`` (typer), and ``main``, which runs them and returns the exit code.

Every error is one line on stderr (``iocane.base.errors.report_error``), typer's own usage errors
included. Heavy modules (torch, Prefect, MLflow) are imported inside the commands, after the
params are validated, so bad params fail in well under a second.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from iocane.base.config import load_config
from iocane.base.errors import BAD_INPUT, GATE_FAILED
from iocane.base.logs import quiet_explained_tracebacks
from iocane.cli.app import app, examples, flow_parameters, guarded
from iocane.cli.options import (
    BaselineFile,
    BaselineUri,
    IfDataChanged,
    ModelFile,
    ModelUri,
    Overrides,
    Params,
    ReportDir,
)


@app.command(
    epilog=examples(
        "iocane run",
        "iocane run --set train.eps=0.05 --set train.epochs=10",
        "iocane run --params configs/fashion_mnist.yaml --if-data-changed",
    )
)
@guarded
def run(
    params: Params = "params.yaml",
    overrides: Overrides = None,
    if_data_changed: IfDataChanged = False,
) -> int:
    """Harden, evaluate, gate and register a model.

    Prints the result as JSON on stdout; exit code 3 when the gate fails. With
    --if-data-changed, stops early (exit 0) when the data is the champion's."""
    # Validate before any work: a bad key, a missing data directory or a model.name that names
    # no buildable network fails here, before Prefect or MLflow are touched.
    config = load_config(params, overrides or [])
    data = config.data
    from iocane.data.sources import check_data_source  # torch: imported once the params are good
    from models.sources import check_source

    check_data_source(data.dataset, data.root, data.download)
    check_source(config.model.name)
    from iocane.registry.login import check_tracking_login

    check_tracking_login(Path.cwd())  # a refused login exits 2 now, not after the training
    from flows.harden import harden, reharden

    quiet_explained_tracebacks()
    flow = reharden if if_data_changed else harden
    result = flow(**flow_parameters(params, overrides or []))
    print(json.dumps(result, indent=2))
    if result.get("status") == "unchanged":
        print(result["reason"], file=sys.stderr)
        return 0
    return 0 if result["gate"] == "passed" else GATE_FAILED


@app.command(
    epilog=examples("iocane sweep", "iocane sweep --set sweep.runner=dask"),
)
@guarded
def sweep(params: Params = "params.yaml", overrides: Overrides = None) -> int:
    """A grid of hardening runs (params: sweep).

    Runs the grid in params' sweep section on the runner it names; prints the summary as
    JSON."""
    config = load_config(params, overrides or [])
    from iocane.data.sources import check_data_source
    from models.sources import check_source

    check_data_source(config.data.dataset, config.data.root, config.data.download)
    check_source(config.model.name)
    from iocane.registry.login import check_tracking_login

    check_tracking_login(Path.cwd())
    from flows.sweep import sweep
    from iocane.pipeline.sweep.runner import task_runner

    quiet_explained_tracebacks()
    result = sweep.with_options(task_runner=task_runner(config.sweep))(
        **flow_parameters(params, overrides or [])
    )
    print(json.dumps(result, indent=2))
    return 0


@app.command(
    epilog=examples(
        "iocane evaluate --model-uri models:/iocane-digits@champion",
        "iocane evaluate --model-uri models:/iocane-digits/3 --set evaluate.preset=thorough",
        "iocane evaluate --model-uri models:/my-classifier/1 --set train.eps=0.1",
        "iocane evaluate --model-file exported.pt2 --baseline-file natural.pt2",
        "iocane evaluate --model-file resnet18_mine.pt --set model.name=torchvision:resnet18",
    )
)
@guarded
def evaluate(
    model_uri: ModelUri = None,
    model_file: ModelFile = None,
    baseline_uri: BaselineUri = None,
    baseline_file: BaselineFile = None,
    params: Params = "params.yaml",
    overrides: Overrides = None,
    out: ReportDir = None,
) -> int:
    """The suite on a registered model, or on any PyTorch model.

    An iocane version is judged under its own threat model beside its natural model, whatever
    params.yaml says now. Any other MLflow PyTorch model (--model-uri) or file (--model-file: a
    state_dict built with model.name, a torch.export .pt2, an iocane model file) takes images in
    [0, 1] and is judged under train.norm and train.eps, alone unless --baseline-uri or
    --baseline-file gives a model to compare with. The data is the params' (prepared first
    when needed). Writes the report, curves, figures and model card; a model from the registry
    or a run gets them logged back to its run and tags. Prints the figures as JSON."""
    if (model_uri is None) == (model_file is None):
        raise typer.BadParameter("give exactly one of --model-uri and --model-file")
    if baseline_uri is not None and baseline_file is not None:
        raise typer.BadParameter("give at most one of --baseline-uri and --baseline-file")
    config = load_config(params, overrides or [])
    from iocane.cli.evaluation import evaluate_command

    printed, result = evaluate_command(
        config,
        Path.cwd(),
        model_uri=model_uri,
        model_file=model_file,
        baseline_uri=baseline_uri,
        baseline_file=baseline_file,
        out=out,
    )
    print(json.dumps(printed, indent=2))
    print(f"report: {result.report_file}", file=sys.stderr)
    return 0


def _registry_client(name: str | None, params: str, overrides: list[str] | None = None):
    """A client of the project's registry, its URI, and the model name (--name, else the
    params' registry.model_name)."""
    from mlflow import MlflowClient

    from iocane.registry.login import check_tracking_login
    from iocane.registry.tracking import tracking_uri

    uri = tracking_uri(Path.cwd())
    check_tracking_login(Path.cwd())
    if not name:
        name = load_config(params, overrides or []).registry.model_name
    return MlflowClient(tracking_uri=uri), uri, name


@app.command(
    epilog=examples("iocane review", "iocane review --name iocane-digits --json"),
)
@guarded
def review(
    params: Params = "params.yaml",
    overrides: Overrides = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", metavar="NAME", help="registered model name (default: registry.model_name)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> int:
    """The registry as a table, and champion against challenger.

    One row per version: aliases, gate, clean and robust accuracy, threat model and eps, trust
    flags, the threat profile (evaluate.threats), data fingerprint, when, and what it cost. Then
    champion against challenger with the deltas, and whether the challenger could be promoted."""
    from iocane.cli.review_table import print_review
    from iocane.registry.review import champion_vs_challenger, version_rows

    client, _, name = _registry_client(name, params, overrides or [])
    rows = version_rows(client, name)
    comparison = champion_vs_challenger(client, name)
    if as_json:
        print(json.dumps({"model": name, "versions": rows, "comparison": comparison}, indent=2))
        return 0
    print_review(name, rows, comparison)
    return 0


@app.command(
    epilog=examples(
        'iocane promote --name iocane-digits --version 4 --reason "better under L2"',
        'iocane promote --name iocane-digits --rollback --reason "v4 misbehaves"',
    )
)
@guarded
def promote(
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="registered model name")],
    version: Annotated[
        str | None, typer.Option("--version", metavar="N", help="the version to make champion")
    ] = None,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="return champion to the version before it")
    ] = False,
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason", metavar="TEXT", help="why: recorded on the version with who and when"
        ),
    ] = None,
) -> int:
    """Make a version champion (gate enforced), or --rollback.

    Give exactly one of --version and --rollback. The version's gate record is checked: exit
    code 3 when the promotion or rollback is refused. Who, when and why are recorded on the
    version."""
    if (version is None) == (not rollback):
        raise typer.BadParameter("give exactly one of --version N and --rollback")
    from iocane.registry.aliases import PromotionRefused
    from iocane.registry.aliases import promote as promote_version
    from iocane.registry.aliases import rollback as roll_back
    from iocane.registry.reevaluation import resolve_model_uri

    client, uri, _ = _registry_client(name, "params.yaml")
    reason = reason or ("rollback" if rollback else "promoted by hand")
    try:
        if rollback:
            message = roll_back(client, uri, name, reason)
        else:
            resolve_model_uri(f"models:/{name}/{version}", Path.cwd())  # exists, or exit 2
            message = promote_version(client, uri, name, version, reason)
    except PromotionRefused as refusal:
        print(str(refusal), file=sys.stderr)
        return GATE_FAILED
    print(message)
    return 0


@app.command(
    epilog=examples(
        'iocane serve --cron "0 3 * * 1"',
        'iocane serve --cron "0 * * * *" --if-data-changed --name hourly-reharden',
    )
)
@guarded
def serve(
    cron: Annotated[
        str, typer.Option("--cron", metavar="CRON", help='cron expression, e.g. "0 3 * * 1"')
    ],
    params: Params = "params.yaml",
    overrides: Overrides = None,
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="NAME", help="deployment name (default: FLOW-scheduled)"),
    ] = None,
    if_data_changed: Annotated[
        bool,
        typer.Option(
            "--if-data-changed", help="serve the reharden flow: harden only when the data changed"
        ),
    ] = False,
) -> int:
    """Serve the harden flow on a schedule.

    Serves harden (or reharden, with --if-data-changed) on a cron schedule; runs until
    stopped. Needs a Prefect server (PREFECT_API_URL): the deployment and its runs show in the
    Prefect UI."""
    load_config(params, overrides or [])
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import PREFECT_API_URL

    try:
        CronSchedule(cron=cron)
    except ValueError:
        print(
            f"error: --cron {cron!r} is not a cron expression "
            '(five fields: minute hour day-of-month month day-of-week, e.g. "0 3 * * 1")',
            file=sys.stderr,
        )
        return BAD_INPUT
    if not PREFECT_API_URL.value():
        print(
            "error: iocane serve needs a Prefect server; start one with `prefect server start` "
            "and set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)",
            file=sys.stderr,
        )
        return BAD_INPUT
    from flows.harden import harden, reharden

    quiet_explained_tracebacks()
    flow = reharden if if_data_changed else harden
    name = name or f"{flow.name}-scheduled"
    print(f"serving {flow.name}/{name} on cron {cron!r}; stop with Ctrl-C", file=sys.stderr)
    flow.serve(
        name=name,
        cron=cron,
        parameters=flow_parameters(params, overrides or []),
        description=flow.description,
        tags=["iocane"],
    )
    return 0


@app.command(
    epilog=examples("iocane schema > params.schema.json"),
)
@guarded
def schema() -> int:
    """The JSON schema of params.yaml.

    For editors that complete and check params.yaml, e.g. the YAML language server with the
    comment '# yaml-language-server: $schema=params.schema.json' at the top of the file."""
    from iocane.base.config_schema import params_json_schema

    print(json.dumps(params_json_schema(), indent=2))
    return 0


def _one_line(message: str) -> str:
    return " ".join(message.split())


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    command = typer.main.get_command(app)
    if not (argv if argv is not None else sys.argv[1:]):
        command.main(args=["--help"], prog_name="iocane", standalone_mode=False)
        return BAD_INPUT  # as a missing command always did
    try:
        code = command.main(args=argv, prog_name="iocane", standalone_mode=False)
    except typer.TyperException as error:  # click's usage errors: unknown option, missing one
        context = getattr(error, "ctx", None)
        where = f" (see `{context.command_path} --help`)" if context is not None else ""
        print(f"error: {_one_line(error.format_message())}{where}", file=sys.stderr)
        return error.exit_code
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        return 130
    return code or 0


# The commands that train or attack: the console script flushes subnormal floats for them.
TORCH_COMMANDS = ("run", "sweep", "evaluate")


def console_main() -> int:
    """The ``iocane`` console script and ``python -m iocane.cli``: ``main`` on ``sys.argv``, in a
    process that is iocane's alone. For a command that trains or attacks, subnormal floats are
    flushed first thing, before torch or Prefect start a thread, so that every thread inherits
    the mode (``iocane.training.hardware``); ``main`` leaves a caller's process as it is."""
    argv = sys.argv[1:]
    if argv and argv[0] in TORCH_COMMANDS:  # the app has no options before its command
        from iocane.training.hardware import flush_subnormals_in_this_process

        flush_subnormals_in_this_process()
    return main(argv)


if __name__ == "__main__":
    sys.exit(console_main())
