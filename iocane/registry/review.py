"""What ``iocane review`` shows: every version, and champion against challenger.

Reads only the registry (version tags, aliases, and the metrics of each version's run), so it
works the same against the local sqlite registry and a tracking server.
"""

from __future__ import annotations

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from iocane.registry.promotion import (
    CHALLENGER,
    CHAMPION,
    Evidence,
    comparable,
    comparison_problem,
    promotion_refusal,
)


def _aliases(client: MlflowClient, name: str) -> dict[str, list[str]]:
    # search_model_versions leaves aliases empty: the registered model holds the alias map.
    aliases: dict[str, list[str]] = {}
    if client.search_registered_models(f"name = '{name}'"):
        for alias, number in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(number), []).append(alias)
    return aliases


def version_rows(client: MlflowClient, name: str) -> list[dict]:
    """One row per version, newest first."""
    aliases = _aliases(client, name)
    rows = []
    for version in client.search_model_versions(f"name = '{name}'"):
        tags = version.tags
        costs = _costs(client, version.run_id)
        rows.append(
            {
                "version": int(version.version),
                "aliases": ",".join(sorted(aliases.get(str(version.version), []))),
                "gate": tags.get("gate", "?"),
                "clean": tags.get("clean_accuracy"),
                "robust": tags.get("robust_accuracy"),
                "threat": tags.get("threat_model"),
                "eps": tags.get("eps"),
                "flags": tags.get("trust_flags"),
                "threats": tags.get("threat_profile") or None,
                # proven-measured, e.g. 0.4500-0.6100 (evaluate.certify)
                "certified": tags.get("certified_band") or None,
                "preset": tags.get("suite_preset"),
                "data": tags.get("data_fingerprint", "")[:12],
                "created": pd.Timestamp(version.creation_timestamp, unit="ms").strftime(
                    "%Y-%m-%d %H:%M"
                ),
                "hours": costs.get("cost/hours"),
                # robust accuracy gained over the natural model, per hour of warmup, training
                # and evaluation: what the hardening bought for its time
                "gain_per_hour": costs.get("cost/robust_gain_per_hour"),
                "price": costs.get("cost/price"),
                "alias_reason": tags.get("alias_reason", ""),
            }
        )
    rows.sort(key=lambda row: row["version"], reverse=True)
    return rows


def _costs(client: MlflowClient, run_id: str | None) -> dict[str, float]:
    """The ``cost/`` metrics of a version's run (none for versions registered before them)."""
    if not run_id:
        return {}
    try:
        metrics = client.get_run(run_id).data.metrics
    except MlflowException:  # the run was deleted: the version stays listed
        return {}
    return {key: value for key, value in metrics.items() if key.startswith("cost/")}


def _run_metrics(client: MlflowClient, version) -> dict[str, float]:
    metrics = client.get_run(version.run_id).data.metrics
    wanted = (
        "clean_accuracy",
        "robust_accuracy",
        "certified_accuracy",
        "natural/clean_accuracy",
        "trust_flags",
        "cost/hours",
        "cost/robust_gain_per_hour",
        "cost/price",
    )
    picked = {key: metrics[key] for key in wanted if key in metrics}
    picked.update(
        {key: value for key, value in sorted(metrics.items()) if key.startswith("robust_accuracy/")}
    )
    for prefix in ("threat_accuracy/", "certified_accuracy/", "smoothing/certified_accuracy/"):
        picked.update(
            {key: value for key, value in sorted(metrics.items()) if key.startswith(prefix)}
        )
    return picked


def champion_vs_challenger(client: MlflowClient, name: str) -> dict:
    """Champion and challenger side by side: metrics, deltas (challenger minus champion), and
    whether a promotion of the challenger would be allowed."""
    versions = {}
    for alias in (CHAMPION, CHALLENGER):
        try:
            versions[alias] = client.get_model_version_by_alias(name, alias)
        except MlflowException:  # no such alias (or no such model): shown as missing
            versions[alias] = None
    champion, challenger = versions[CHAMPION], versions[CHALLENGER]
    result: dict = {
        "champion": str(champion.version) if champion else None,
        "challenger": str(challenger.version) if challenger else None,
        "comparable": None,
        "promotable": None,
        "summary": "",
        "metrics": [],
    }
    if champion is None or challenger is None:
        held = [f"{alias} v{v.version}" for alias, v in versions.items() if v is not None]
        result["summary"] = (
            f"no champion/challenger pair to compare ({', '.join(held) or 'no aliases'})"
        )
        return result
    ours = Evidence.from_tags(champion.version, champion.tags)
    theirs = Evidence.from_tags(challenger.version, challenger.tags)
    result["comparable"] = comparable(ours, theirs)
    refusal = promotion_refusal(theirs, ours)
    result["promotable"] = refusal is None
    if not result["comparable"]:
        result["summary"] = (
            f"champion v{ours.version} ({ours.threat}) and challenger v{theirs.version} "
            f"({theirs.threat}) were judged under different threat models: not compared"
        )
        return result
    champion_metrics = _run_metrics(client, champion)
    challenger_metrics = _run_metrics(client, challenger)
    for metric in dict.fromkeys([*champion_metrics, *challenger_metrics]):
        a, b = champion_metrics.get(metric), challenger_metrics.get(metric)
        result["metrics"].append(
            {
                "metric": metric,
                f"champion v{ours.version}": a,
                f"challenger v{theirs.version}": b,
                "delta": None if a is None or b is None else b - a,
            }
        )
    better = comparison_problem(theirs, ours, max_clean_regression=1.0)
    verdict = "promotable with `iocane promote`" if refusal is None else refusal
    result["summary"] = (
        f"champion v{ours.version} against challenger v{theirs.version} ({ours.threat}); "
        f"deltas are challenger minus champion. "
        + ("The challenger is at least as robust. " if better is None else f"{better}. ")
        + f"Challenger: {verdict}."
    )
    return result
