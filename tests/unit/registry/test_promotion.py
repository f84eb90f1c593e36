"""Champion/challenger rules, on their own and against a real (sqlite) MLflow registry."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from iocane.registry.aliases import (
    PromotionRefused,
    assign_alias,
    champion_stack,
    promote,
    rollback,
)
from iocane.registry.promotion import (
    CHALLENGER,
    CHAMPION,
    Evidence,
    alias_for_new_version,
    promotion_refusal,
)
from iocane.registry.review import champion_vs_challenger, version_rows
from tests.helpers.registry_files import copy_registry


def evidence(version: int = 2, **changes) -> Evidence:
    values = {
        "version": str(version),
        "gate": "passed",
        "trust_flags": 0,
        "threat_model": "Linf",
        "eps": 0.1,
        "clean_accuracy": 0.95,
        "robust_accuracy": 0.80,
    }
    values.update(changes)
    return Evidence(**values)


CHAMP = evidence(1)


@pytest.mark.parametrize(
    ("candidate", "alias", "reason"),
    [
        (evidence(gate="failed"), None, "gate failed"),
        (evidence(trust_flags=2), CHALLENGER, "2 trust flag(s)"),
        (evidence(robust_accuracy=0.81), CHAMPION, ">= champion v1"),
        (evidence(robust_accuracy=0.80), CHAMPION, ">= champion v1"),  # ties go to the new one
        (evidence(robust_accuracy=0.79), CHALLENGER, "0.7900 < champion v1's 0.8000"),
        (evidence(robust_accuracy=0.85, clean_accuracy=0.93), CHALLENGER, "0.0200 below"),
        (evidence(robust_accuracy=0.85, clean_accuracy=0.945), CHAMPION, "within 0.01"),
        (evidence(robust_accuracy=0.85, eps=0.2), CHALLENGER, "not compared"),
        (evidence(robust_accuracy=0.85, threat_model="L2"), CHALLENGER, "not compared"),
    ],
    ids=[
        "fail",
        "flagged",
        "more-robust",
        "as-robust",
        "less-robust",
        "clean-regression",
        "small-clean-loss",
        "other-eps",
        "other-norm",
    ],
)
def test_alias_for_a_new_version(candidate: Evidence, alias: str | None, reason: str) -> None:
    decision = alias_for_new_version(candidate, CHAMP, max_clean_regression=0.01)
    assert decision.alias == alias
    assert reason in decision.reason


def test_first_passing_version_is_champion_and_missing_evidence_never_is() -> None:
    assert alias_for_new_version(evidence(1), None, 0.01).alias == CHAMPION
    untagged = Evidence.from_tags("3", {"gate": "passed", "threat_model": "Linf", "eps": "0.1"})
    assert alias_for_new_version(untagged, None, 0.01).alias == CHALLENGER


def test_promotion_by_hand_refuses_failed_flagged_and_incomparable() -> None:
    assert "did not pass the gate" in promotion_refusal(evidence(gate="failed"), CHAMP)
    assert "trust flag" in promotion_refusal(evidence(trust_flags=1), CHAMP)
    assert "cannot be compared" in promotion_refusal(evidence(eps=0.3), CHAMP)
    # A reviewer may prefer a less robust version: a judgement, recorded with its reason.
    assert promotion_refusal(evidence(robust_accuracy=0.5), CHAMP) is None
    assert promotion_refusal(evidence(eps=0.3), None) is None


# --- against a real registry ---------------------------------------------------------------

NAME = "iocane-rules"


@pytest.fixture
def registry(
    empty_registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[MlflowClient, str]:
    monkeypatch.setenv("IOCANE_USER", "reviewer-a")
    uri = copy_registry(empty_registry, tmp_path)
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model(NAME)
    return client, uri


def create_version(client: MlflowClient, name: str, robust: float | str, **tags: str) -> str:
    """A version with what iocane's register stage writes: the evidence tags (``evidence_key``
    last) and a run whose metrics record the gate."""
    values = {
        "gate": "passed",
        "trust_flags": "0",
        "threat_model": "Linf",
        "eps": "0.1",
        "clean_accuracy": "0.95",
        "robust_accuracy": str(robust),
        "evidence_key": "test",
    }
    values.update(tags)
    run_id = client.create_run("0").info.run_id  # the default experiment
    client.log_metric(run_id, "gate_passed", float(values["gate"] == "passed"))
    client.log_metric(run_id, "trust_flags", float(values["trust_flags"]))
    client.set_terminated(run_id)
    return str(
        client.create_model_version(name, source="models/fake", run_id=run_id, tags=values).version
    )


def register(client: MlflowClient, robust: float, **tags: str) -> str:
    version = create_version(client, NAME, robust, **tags)
    assign_alias(client, client.tracking_uri, NAME, version, max_clean_regression=0.01)
    return version


def aliases(client: MlflowClient) -> dict[str, str]:
    return {key: str(value) for key, value in client.get_registered_model(NAME).aliases.items()}


def test_registry_aliases_promotion_and_rollback(registry) -> None:
    client, uri = registry
    v1 = register(client, 0.80)
    v2 = register(client, 0.78)  # less robust: challenger
    v3 = register(client, 0.70, gate="failed")  # no alias
    v4 = register(client, 0.90, eps="0.2")  # other eps: challenger, not compared
    assert aliases(client) == {CHAMPION: v1, CHALLENGER: v4}
    version_tags = {v: client.get_model_version(NAME, v).tags for v in (v1, v2, v3, v4)}
    assert version_tags[v1]["champion_action"] == "registered"
    assert "not compared" in version_tags[v4]["alias_reason"]
    assert "gate failed" in version_tags[v3]["alias_reason"]

    with pytest.raises(PromotionRefused, match="did not pass the gate"):
        promote(client, uri, NAME, v3, "try")
    with pytest.raises(PromotionRefused, match="cannot be compared"):
        promote(client, uri, NAME, v4, "try")
    assert aliases(client)[CHAMPION] == v1  # refusals move nothing

    message = promote(client, uri, NAME, v2, "v1 misbehaves on the new camera")
    assert message.endswith("now champion (was v1)")
    tags = client.get_model_version(NAME, v2).tags
    assert tags["champion_by"] == "reviewer-a"
    assert tags["champion_reason"] == "v1 misbehaves on the new camera"
    assert tags["champion_action"] == "promoted" and tags["champion_at"].endswith("Z")
    assert champion_stack(client, NAME) == [v1, v2]

    v5 = register(client, 0.85)  # beats v2 under the same threat model
    assert aliases(client)[CHAMPION] == v5
    assert rollback(client, uri, NAME, "v5 broke a downstream service").endswith(f"to v{v2}")
    assert aliases(client)[CHAMPION] == v2
    assert client.get_model_version(NAME, v5).tags["demoted_reason"].startswith("v5 broke")
    assert client.get_model_version(NAME, v2).tags["champion_action"] == "rollback"
    rollback(client, uri, NAME, "again")
    assert aliases(client)[CHAMPION] == v1
    with pytest.raises(PromotionRefused, match="no earlier one"):
        rollback(client, uri, NAME, "once more")
    assert aliases(client)[CHAMPION] == v1


def test_review_compares_champion_and_challenger(registry) -> None:
    client, _ = registry
    gate = {"gate_passed": 1.0, "trust_flags": 0.0}
    run = client.create_run(client.create_experiment("runs"))
    for key, value in {"clean_accuracy": 0.95, "robust_accuracy": 0.8, **gate}.items():
        client.log_metric(run.info.run_id, key, value)
    other = client.create_run(run.info.experiment_id)
    for key, value in {"clean_accuracy": 0.97, "robust_accuracy": 0.75, **gate}.items():
        client.log_metric(other.info.run_id, key, value)
    for run_id, robust in ((run.info.run_id, 0.8), (other.info.run_id, 0.75)):
        tags = {
            "gate": "passed",
            "trust_flags": "0",
            "threat_model": "Linf",
            "eps": "0.1",
            "clean_accuracy": "0.95" if robust == 0.8 else "0.97",
            "robust_accuracy": str(robust),
            "evidence_key": "test",
        }
        version = client.create_model_version(
            NAME, source="models/fake", run_id=run_id, tags=tags
        ).version
        assign_alias(client, client.tracking_uri, NAME, str(version), max_clean_regression=0.01)

    rows = version_rows(client, NAME)
    assert [(row["version"], row["aliases"]) for row in rows] == [
        (2, CHALLENGER),
        (1, CHAMPION),
    ]
    comparison = champion_vs_challenger(client, NAME)
    assert comparison["comparable"] and comparison["promotable"]
    deltas = {row["metric"]: row["delta"] for row in comparison["metrics"]}
    assert deltas["robust_accuracy"] == pytest.approx(-0.05)
    assert deltas["clean_accuracy"] == pytest.approx(0.02)
    assert "0.7500 < champion v1's 0.8000" in comparison["summary"]
    json.dumps(comparison)  # --json must be able to print it


def test_simultaneous_alias_decisions_are_serialised(registry) -> None:
    # Both versions pass; v2 is the more robust. Released together, two unserialised decisions
    # both read "no champion" and both claim it, and the last write wins. Under the lock the
    # outcome is the same in every order: v2 champion, history consistent.
    client, uri = registry
    for round_ in range(3):
        name = f"race-{round_}"
        client.create_registered_model(name)
        versions = [create_version(client, name, robust) for robust in ("0.80", "0.85")]
        barrier = threading.Barrier(len(versions))
        errors: list[BaseException] = []

        def decide(version: str, name: str = name, barrier=barrier, errors=errors) -> None:
            barrier.wait()
            try:
                assign_alias(MlflowClient(uri), uri, name, str(version), 0.01)
            except BaseException as error:  # reported below: a thread's exception is lost
                errors.append(error)

        threads = [threading.Thread(target=decide, args=(v,)) for v in reversed(versions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert str(client.get_registered_model(name).aliases["champion"]) == "2"
        stack = champion_stack(client, name)
        assert stack[-1] == "2" and len(stack) == len(set(stack))
