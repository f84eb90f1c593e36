"""Who holds ``champion`` and ``challenger``, and every move of them.

Aliases follow ``iocane.registry.promotion``: a passing version becomes ``champion`` when it beats
the champion under the same threat model, else ``challenger``; a failed gate moves no alias. Every
move of ``champion`` (on registration, by ``iocane promote``, by a rollback) goes through
``_set_champion``, which re-reads the version's gate record first, and is recorded: who, when and
why as tags on the version, and the stack of champions as a tag on the registered model, so a
rollback restores the one before.

Every decision (``assign_alias``, ``promote``, ``rollback``) reads, decides and writes inside
``decision_guard``: the file lock (``iocane.base.locks``) orders the runs of one machine, and for a
registry several machines share, the registry lease (``iocane.registry.lease``, where the
interleavings are argued) orders the machines. So two deciders never interleave, wherever they
run: neither can read a champion the other is about to replace, and the ``champion_stack`` tag,
a read-modify-write of one tag, is only ever rewritten by the holder, so no move is lost from it.
A holder checks its lease is still young before its first write (``Lease.check``).
"""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from iocane.base.locks import exclusive_lock, registry_lock_path
from iocane.base.settings import settings
from iocane.registry.lease import Lease, registry_lease, shared_registry
from iocane.registry.promotion import (
    CHALLENGER,
    CHAMPION,
    Decision,
    Evidence,
    alias_for_new_version,
    eligibility_problem,
    promotion_refusal,
)

# Registered-model tag: the versions that held `champion`, oldest first (a rollback pops it).
CHAMPION_STACK = "champion_stack"
# Version tag: why the version got its alias (or none). Written last, once every move of the
# decision is made: a version without it is one whose decision did not finish (the server went
# away in the middle), and ``assign_alias`` run again finishes it.
DECISION_TAG = "alias_reason"


class PromotionRefused(Exception):
    """A promotion or rollback the registry's rules do not allow; the message says why."""


@contextmanager
def decision_guard(client: MlflowClient, uri: str, name: str) -> Iterator[Lease | None]:
    """Hold the right to move ``name``'s aliases: the file lock of this machine, then, for a
    registry several machines share, the registry lease (None for a one-machine registry)."""
    with exclusive_lock(registry_lock_path(uri)):
        if not shared_registry(uri):
            yield None
            return
        with registry_lease(client, name) as lease:
            yield lease


def _check(lease: Lease | None) -> None:
    if lease is not None:
        lease.check()


def current_evidence(client: MlflowClient, name: str, alias: str) -> Evidence | None:
    """The evidence of the version holding ``alias``, or None when no version does."""
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return Evidence.from_tags(version.version, version.tags)


def champion_stack(client: MlflowClient, name: str) -> list[str]:
    """The versions that held ``champion``, oldest first."""
    return json.loads(client.get_registered_model(name).tags.get(CHAMPION_STACK, "[]"))


def _who() -> str:
    try:
        return settings().user or getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def gate_record_problem(client: MlflowClient, name: str, version: str) -> str | None:
    """Why ``version`` lacks a passing, unflagged gate record of its own, or None. The record is
    twofold and both halves must agree: the version's tags (complete once ``evidence_key``, the
    last evidence tag, is written) and the metrics its MLflow run logged when it was registered."""
    model_version = client.get_model_version(name, version)
    problem = eligibility_problem(Evidence.from_tags(version, model_version.tags))
    if problem:
        return problem
    if "evidence_key" not in model_version.tags:
        return f"v{version}'s evidence is incomplete (it was not registered by iocane)"
    if not model_version.run_id:
        return f"v{version} has no MLflow run holding its gate record"
    metrics = client.get_run(model_version.run_id).data.metrics
    if metrics.get("gate_passed") != 1.0 or metrics.get("trust_flags") != 0.0:
        return (
            f"v{version}'s run {model_version.run_id} records gate_passed="
            f"{metrics.get('gate_passed')} and trust_flags={metrics.get('trust_flags')}, "
            "not a passing, unflagged gate: its tags disagree with its run"
        )
    return None


def _set_champion(client: MlflowClient, name: str, version: str) -> None:
    """The one place that moves ``champion``: only onto a version with a passing, unflagged
    gate record (``gate_record_problem``), whichever command asked."""
    problem = gate_record_problem(client, name, version)
    if problem:
        raise PromotionRefused(f"refused: {problem}")
    client.set_registered_model_alias(name, CHAMPION, version)


def _crown(client: MlflowClient, name: str, version: str, action: str, reason: str) -> None:
    """Move ``champion`` to ``version`` and record who, when and why. Under ``decision_guard``.
    MLflow moves an alias in one call: a reader sees the old champion or the new one."""
    stack = champion_stack(client, name)
    if action == "rollback":
        stack.pop()
    elif not stack or stack[-1] != version:  # on top already: an unfinished move, finished again
        stack.append(version)
    _set_champion(client, name, version)
    client.set_registered_model_tag(name, CHAMPION_STACK, json.dumps(stack[-100:]))
    for key, value in {
        "champion_action": action,
        "champion_by": _who(),
        "champion_at": _now(),
        "champion_reason": reason,
    }.items():
        client.set_model_version_tag(name, version, key, value)
    challenger = current_evidence(client, name, CHALLENGER)
    if challenger is not None and challenger.version == version:
        client.delete_registered_model_alias(name, CHALLENGER)


def assign_alias(
    client: MlflowClient, uri: str, name: str, version: str, max_clean_regression: float
) -> Decision:
    """Set the alias a new version earns (``iocane.registry.promotion``), under the guard, and
    then its ``DECISION_TAG``. If a registry call fails halfway, ``champion`` goes back to the
    version that held it. Run again on a version whose decision did not finish, it finishes it:
    a version an earlier attempt already crowned stays champion and its move is recorded."""
    with decision_guard(client, uri, name) as lease:
        tags = client.get_model_version(name, version).tags
        candidate = Evidence.from_tags(version, tags)
        champion = current_evidence(client, name, CHAMPION)
        if champion is not None and champion.version == candidate.version:
            # Crowned before the server went away, the record unwritten: not judged against itself.
            reason = tags.get("champion_reason") or "crowned by an earlier, unfinished attempt"
            decision, champion = Decision(CHAMPION, reason), None
        else:
            decision = alias_for_new_version(candidate, champion, max_clean_regression)
        _check(lease)
        try:
            if decision.alias == CHAMPION:
                _crown(client, name, version, "registered", decision.reason)
            elif decision.alias == CHALLENGER:
                client.set_registered_model_alias(name, CHALLENGER, version)
        except BaseException:
            if champion is not None and decision.alias == CHAMPION:
                _set_champion(client, name, champion.version)
            raise
        client.set_model_version_tag(name, version, DECISION_TAG, decision.reason)
    return decision


def decision_finished(client: MlflowClient, name: str, version: str) -> bool:
    """Whether ``assign_alias`` finished for ``version`` (its ``DECISION_TAG`` is written)."""
    return DECISION_TAG in client.get_model_version(name, version).tags


def promote(client: MlflowClient, uri: str, name: str, version: str, reason: str) -> str:
    """A reviewer makes ``version`` champion. Re-reads its gate evidence and raises
    ``PromotionRefused`` for a failed, flagged or incomparable version."""
    with decision_guard(client, uri, name) as lease:
        candidate = Evidence.from_tags(version, client.get_model_version(name, version).tags)
        champion = current_evidence(client, name, CHAMPION)
        refusal = promotion_refusal(candidate, champion)
        if refusal:
            raise PromotionRefused(f"refused: {refusal}")
        if champion is not None and champion.version == candidate.version:
            return f"{name} v{version} is already champion"
        _check(lease)
        _crown(client, name, candidate.version, "promoted", reason)
    was = f" (was v{champion.version})" if champion else ""
    return f"{name} v{candidate.version} is now champion{was}"


def rollback(client: MlflowClient, uri: str, name: str, reason: str) -> str:
    """Return ``champion`` to the version that held it before the current one."""
    with decision_guard(client, uri, name) as lease:
        champion = current_evidence(client, name, CHAMPION)
        if champion is None:
            raise PromotionRefused(f"refused: {name} has no champion to roll back")
        stack = champion_stack(client, name)
        _check(lease)
        if not stack or stack[-1] != champion.version:
            # `champion` was moved outside iocane (in the MLflow UI): count it as the newest.
            stack.append(champion.version)
            client.set_registered_model_tag(name, CHAMPION_STACK, json.dumps(stack))
        if len(stack) < 2:
            raise PromotionRefused(
                f"refused: v{champion.version} is the first champion of {name}; there is no "
                "earlier one to return to"
            )
        previous = stack[-2]
        _crown(client, name, previous, "rollback", reason)
        for key, value in {
            "demoted_at": _now(),
            "demoted_by": _who(),
            "demoted_reason": reason,
        }.items():
            client.set_model_version_tag(name, champion.version, key, value)
    return f"{name}: champion rolled back from v{champion.version} to v{previous}"
