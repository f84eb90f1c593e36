"""The ``iocane`` command: run, evaluate, review, promote, serve.

Exit codes: 0 success (gate passed), 3 gate failed or promotion refused, 2 bad input
(params, data, model files, model URIs), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Before Prefect is imported: no telemetry, and our progress lines reach the Prefect UI too.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "iocane")
# The temporary Prefect server gets 20 s to start by default: too little on a loaded laptop.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
# Against a tracking server MLflow prints "View run ... at" links on stdout when a run ends;
# stdout carries the commands' JSON result, so they are left out.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# `iocane evaluate` logs outside any flow run: no warning per line about the missing run.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")

from iocane.config import load_config
from iocane.errors import BAD_INPUT, GATE_FAILED, ModelUriError, exit_code_for, report_error
from iocane.interrupts import stop_on_signals
from iocane.logs import quiet_explained_tracebacks, setup_console_logging


def _run(args: argparse.Namespace) -> int:
    # Validate before any work: a bad key or a missing data directory fails here, before
    # Prefect or MLflow are touched.
    data = load_config(args.params, args.set).data
    from iocane.data.sources import check_data_source  # torch: imported once the params are good

    check_data_source(data.dataset, data.root, data.download)
    from flows.harden import harden, reharden

    quiet_explained_tracebacks()
    flow = reharden if args.if_data_changed else harden
    result = flow(
        params_path=str(Path(args.params).resolve()),
        overrides=list(args.set),
        project_root=str(Path.cwd()),
    )
    print(json.dumps(result, indent=2))
    if result.get("status") == "unchanged":
        print(result["reason"], file=sys.stderr)
        return 0
    return 0 if result["gate"] == "passed" else GATE_FAILED


def _sweep(args: argparse.Namespace) -> int:
    """The grid in params' ``sweep`` section, on the runner it names; prints the summary."""
    config = load_config(args.params, args.set)
    from iocane.data.sources import check_data_source

    check_data_source(config.data.dataset, config.data.root, config.data.download)
    from flows.sweep import sweep, task_runner

    quiet_explained_tracebacks()
    result = sweep.with_options(task_runner=task_runner(config.sweep))(
        params_path=str(Path(args.params).resolve()),
        overrides=list(args.set),
        project_root=str(Path.cwd()),
    )
    print(json.dumps(result, indent=2))
    return 0


def _client_and_version(uri: str):
    """Resolve ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` to (client, ModelVersion)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from iocane.registry.tracking import tracking_uri

    if not uri.startswith("models:/"):
        raise ModelUriError(
            f"model URI {uri!r} must look like models:/NAME@ALIAS or models:/NAME/N"
        )
    client = MlflowClient(tracking_uri=tracking_uri(Path.cwd()))
    body = uri.removeprefix("models:/")
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            return client, client.get_model_version_by_alias(name, alias)
        name, version = body.rsplit("/", 1)
        return client, client.get_model_version(name, version)
    except (MlflowException, ValueError) as error:
        raise ModelUriError(f"no registered model at {uri}: {error}") from None


def _evaluate(args: argparse.Namespace) -> int:
    """The suite, curves and report for a registered version, logged back to its run."""
    import dataclasses
    import time

    import mlflow

    from iocane.data.prepared import load_prepared
    from iocane.files import confined
    from iocane.layout import Layout
    from iocane.modelio import load_model
    from iocane.registry.tracking import tracking_uri
    from iocane.robustness.suite import evaluate_and_report
    from iocane.settings import resolve_device

    config = load_config(args.params, args.set)
    client, version = _client_and_version(args.model_uri)
    uri = tracking_uri(Path.cwd())
    name, number = version.name, str(version.version)
    out = Layout(
        confined(
            Path(args.out) if args.out else Path("reports", "evaluations", f"{name}-v{number}"),
            Path.cwd(),
            "--out" if args.out else "the report directory",
        )
    )

    def weights(artifact: str) -> Path:
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=artifact, tracking_uri=uri
            )
        )

    device = resolve_device()
    hardened, _ = load_model(weights("weights/model.pt"), device)
    natural, _ = load_model(weights("weights/natural/model.pt"), device)
    data = load_prepared(Layout(Path.cwd()))
    if version.tags.get("data_fingerprint") != data.meta["fingerprint"]:
        print(
            "warning: data/prepared differs from the data this version was trained on "
            f"({version.tags.get('data_fingerprint', 'unknown')[:12]})",
            file=sys.stderr,
        )
    # The version is judged under its own threat model, whatever params.yaml says now.
    train = dataclasses.replace(
        config.train,
        norm=version.tags.get("threat_model", config.train.norm),
        eps=float(version.tags.get("eps", config.train.eps)),
    )
    config = dataclasses.replace(config, train=train)
    metrics = evaluate_and_report(config, hardened, natural, data, out)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (
        out.metrics_file("evaluate"),
        out.report_file,
        out.curves_file,
        out.curves_plot,
        out.examples_plot,
        out.alignment_plot,
    ):
        client.log_artifact(version.run_id, str(path), f"evaluations/{stamp}")
    for key, value in {
        "reevaluated_at": stamp,
        "reevaluated_preset": config.evaluate.preset,
        "reevaluated_robust_accuracy": f"{metrics['robust_accuracy']:.6f}",
        "reevaluated_flags": str(len(metrics["flags"])),
    }.items():
        client.set_model_version_tag(name, number, key, value)
    print(json.dumps({"model": args.model_uri, "version": number, **metrics}, indent=2))
    print(f"report: {out.report_file}", file=sys.stderr)
    return 0


def _registry_client(name: str | None, params: str):
    from mlflow import MlflowClient

    from iocane.registry.tracking import tracking_uri

    uri = tracking_uri(Path.cwd())
    return MlflowClient(tracking_uri=uri), uri, name or load_config(params).registry.model_name


def _review(args: argparse.Namespace) -> int:
    """The registry as a table, and champion against challenger with the deltas."""
    import pandas as pd

    from iocane.registry.review import champion_vs_challenger, version_rows

    client, _, name = _registry_client(args.name, args.params)
    rows = version_rows(client, name)
    comparison = champion_vs_challenger(client, name)
    if args.json:
        print(json.dumps({"model": name, "versions": rows, "comparison": comparison}, indent=2))
        return 0
    if not rows:
        print(f"no versions of {name} in the registry")
        return 0
    print(f"{name}: {len(rows)} version(s)\n")
    frame = pd.DataFrame(rows).drop(columns=["alias_reason"])
    if frame["price"].isna().all():  # report.price_per_hour was never set
        frame = frame.drop(columns=["price"])
    for column, digits in (("hours", 3), ("gain_per_hour", 3), ("price", 2)):
        if column in frame:
            frame[column] = frame[column].map(
                lambda value, d=digits: "" if pd.isna(value) else f"{value:.{d}f}"
            )
    print(frame.to_string(index=False))
    print()
    print(comparison["summary"])
    if comparison["metrics"]:
        table = pd.DataFrame(comparison["metrics"]).set_index("metric")
        table["delta"] = table["delta"].map(lambda delta: "" if pd.isna(delta) else f"{delta:+.4f}")
        print(table.to_string(float_format=lambda value: f"{value:.4f}"))
    return 0


def _promote(args: argparse.Namespace) -> int:
    from iocane.registry.aliases import PromotionRefused, promote, rollback

    client, uri, _ = _registry_client(args.name, "params.yaml")
    reason = args.reason or ("rollback" if args.rollback else "promoted by hand")
    try:
        if args.rollback:
            message = rollback(client, uri, args.name, reason)
        else:
            _client_and_version(f"models:/{args.name}/{args.version}")  # exists, or exit 2
            message = promote(client, uri, args.name, args.version, reason)
    except PromotionRefused as refusal:
        print(str(refusal), file=sys.stderr)
        return GATE_FAILED
    print(message)
    return 0


def _serve(args: argparse.Namespace) -> int:
    """Serve ``harden`` (or ``reharden``) on a cron schedule; runs until stopped. Needs a Prefect
    server (``PREFECT_API_URL``): the deployment and its runs show in the Prefect UI."""
    load_config(args.params, args.set)
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import PREFECT_API_URL

    try:
        CronSchedule(cron=args.cron)
    except ValueError:
        print(
            f"error: --cron {args.cron!r} is not a cron expression "
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
    flow = reharden if args.if_data_changed else harden
    name = args.name or f"{flow.name}-scheduled"
    print(f"serving {flow.name}/{name} on cron {args.cron!r}; stop with Ctrl-C", file=sys.stderr)
    flow.serve(
        name=name,
        cron=args.cron,
        parameters={
            "params_path": str(Path(args.params).resolve()),
            "overrides": list(args.set),
            "project_root": str(Path.cwd()),
        },
        description=flow.description,
        tags=["iocane"],
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iocane", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_params(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--params", default="params.yaml", help="params file (params.yaml)")
        sub.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override one parameter; repeatable",
        )
        return sub

    run = with_params(
        commands.add_parser("run", help="harden, evaluate, gate and register a model")
    )
    run.add_argument(
        "--if-data-changed",
        action="store_true",
        help="only when the data fingerprint differs from the champion's (the reharden flow)",
    )
    with_params(commands.add_parser("sweep", help="a grid of hardening runs (params: sweep)"))
    evaluate = with_params(commands.add_parser("evaluate", help="the suite on a registered model"))
    evaluate.add_argument("--model-uri", required=True, help="models:/NAME@ALIAS or models:/NAME/N")
    evaluate.add_argument("--out", help="where the report goes (reports/evaluations/NAME-vN)")
    review = with_params(commands.add_parser("review", help="the registry as a table"))
    review.add_argument("--name", help="registered model name (default: registry.model_name)")
    review.add_argument("--json", action="store_true", help="machine-readable output")
    promote = commands.add_parser(
        "promote", help="make a version champion (gate enforced), or --rollback"
    )
    promote.add_argument("--name", required=True, help="registered model name")
    target = promote.add_mutually_exclusive_group(required=True)
    target.add_argument("--version", help="the version to make champion")
    target.add_argument(
        "--rollback", action="store_true", help="return champion to the version before it"
    )
    promote.add_argument("--reason", help="why: recorded on the version with who and when")
    serve = with_params(commands.add_parser("serve", help="serve the harden flow on a schedule"))
    serve.add_argument("--cron", required=True, help='cron expression, e.g. "0 3 * * 1"')
    serve.add_argument("--name", help="deployment name (default: FLOW-scheduled)")
    serve.add_argument(
        "--if-data-changed",
        action="store_true",
        help="serve the reharden flow: harden only when the data changed",
    )
    return parser


COMMANDS = {
    "sweep": _sweep,
    "run": _run,
    "evaluate": _evaluate,
    "review": _review,
    "promote": _promote,
    "serve": _serve,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_console_logging()
    try:
        with stop_on_signals():
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # mapped to a documented exit code with a one-line message
        report_error(error)
        return exit_code_for(error)


if __name__ == "__main__":
    sys.exit(main())
