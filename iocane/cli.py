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

from iocane.config import load_config
from iocane.errors import GATE_FAILED, ModelUriError, exit_code_for, report_error
from iocane.logs import setup_console_logging


def _run(args: argparse.Namespace) -> int:
    # Validate before any work: a bad key fails here, before Prefect or MLflow are touched.
    load_config(args.params, args.set)
    from flows.harden import harden

    result = harden(
        params_path=str(Path(args.params).resolve()),
        overrides=list(args.set),
        project_root=str(Path.cwd()),
    )
    print(json.dumps(result, indent=2))
    return 0 if result["gate"] == "passed" else GATE_FAILED


def _client_and_version(uri: str):
    """Resolve ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` to (client, ModelVersion)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tasks.registry import tracking_uri

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

    from iocane.layout import Layout
    from iocane.modelio import load_model
    from tasks.data import load_prepared
    from tasks.evaluate import evaluate_and_report
    from tasks.registry import tracking_uri
    from tasks.train import resolve_device

    config = load_config(args.params, args.set)
    client, version = _client_and_version(args.model_uri)
    uri = tracking_uri(Path.cwd())

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
    name, number = version.name, str(version.version)
    out = Layout(
        Path(args.out) if args.out else Path("reports", "evaluations", f"{name}-v{number}")
    )
    metrics = evaluate_and_report(config, hardened, natural, data, out)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (
        out.metrics_file("evaluate"),
        out.report_file,
        out.curves_file,
        out.curves_plot,
        out.examples_plot,
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


def _review(args: argparse.Namespace) -> int:
    import pandas as pd
    from mlflow import MlflowClient

    from tasks.registry import tracking_uri

    name = args.name or load_config(args.params).registry.model_name
    client = MlflowClient(tracking_uri=tracking_uri(Path.cwd()))
    # search_model_versions leaves aliases empty: the registered model holds the alias map.
    aliases: dict[str, list[str]] = {}
    if client.search_registered_models(f"name = '{name}'"):
        for alias, number in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(number), []).append(alias)
    rows = []
    for version in client.search_model_versions(f"name = '{name}'"):
        tags = version.tags
        rows.append(
            {
                "version": int(version.version),
                "aliases": ",".join(sorted(aliases.get(str(version.version), []))),
                "gate": tags.get("gate", "?"),
                "clean": tags.get("clean_accuracy"),
                "robust": tags.get("robust_accuracy"),
                "threat": tags.get("threat_model"),
                "eps": tags.get("eps"),
                "data": tags.get("data_fingerprint", "")[:12],
                "created": pd.Timestamp(version.creation_timestamp, unit="ms").strftime(
                    "%Y-%m-%d %H:%M"
                ),
            }
        )
    rows.sort(key=lambda row: row["version"], reverse=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no versions of {name} in the registry")
    else:
        print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _promote(args: argparse.Namespace) -> int:
    client, version = _client_and_version(f"models:/{args.name}/{args.version}")
    gate = version.tags.get("gate")
    flags = version.tags.get("trust_flags", "0")
    if gate != "passed" or flags != "0":
        print(
            f"refused: {args.name} v{args.version} has gate={gate or 'missing'} and "
            f"{flags} trust flag(s); only a version that passed the gate can be champion",
            file=sys.stderr,
        )
        return GATE_FAILED
    client.set_registered_model_alias(args.name, "champion", args.version)
    print(f"{args.name} v{args.version} is now champion")
    return 0


def _serve(args: argparse.Namespace) -> int:
    load_config(args.params, args.set)
    from flows.harden import harden

    harden.serve(
        name="harden-scheduled",
        cron=args.cron,
        parameters={
            "params_path": str(Path(args.params).resolve()),
            "overrides": list(args.set),
            "project_root": str(Path.cwd()),
        },
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

    with_params(commands.add_parser("run", help="harden, evaluate, gate and register a model"))
    evaluate = with_params(commands.add_parser("evaluate", help="the suite on a registered model"))
    evaluate.add_argument("--model-uri", required=True, help="models:/NAME@ALIAS or models:/NAME/N")
    evaluate.add_argument("--out", help="where the report goes (reports/evaluations/NAME-vN)")
    review = with_params(commands.add_parser("review", help="the registry as a table"))
    review.add_argument("--name", help="registered model name (default: registry.model_name)")
    review.add_argument("--json", action="store_true", help="machine-readable output")
    promote = commands.add_parser("promote", help="make a version champion (gate enforced)")
    promote.add_argument("--name", required=True)
    promote.add_argument("--version", required=True)
    serve = with_params(commands.add_parser("serve", help="serve the harden flow on a schedule"))
    serve.add_argument("--cron", required=True, help='cron expression, e.g. "0 3 * * 1"')
    return parser


COMMANDS = {
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
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # mapped to a documented exit code with a one-line message
        report_error(error)
        return exit_code_for(error)


if __name__ == "__main__":
    sys.exit(main())
