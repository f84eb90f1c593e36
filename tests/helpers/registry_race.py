"""Machines racing on ``champion``: worker processes, each a "machine" with its own project
directory and lock files, register a version and decide its alias at the same moment against
one MLflow server, trial after trial; the parent checks the registry after each trial.

Each worker calls what the register stage calls (a run with the gate metrics, a version with
iocane's evidence tags, then ``assign_alias``) through the real MLflow client, without training.
Run it by hand to see the race without the guard::

    python -m tests.helpers.registry_race --url http://127.0.0.1:18300 --trials 20 --unguarded
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]  # the checkout: tests/ is not installed

RESULT = "RESULT "


def _register_and_decide(client, order: dict) -> dict:
    from iocane.registry.aliases import assign_alias

    name = order["name"]
    tags = {
        "gate": "passed",
        "trust_flags": "0",
        "threat_model": "Linf",
        "eps": "0.1",
        "clean_accuracy": f"{order['clean']:.6f}",
        "robust_accuracy": f"{order['robust']:.6f}",
        "evidence_key": f"race-{order['machine']}-{name}",
    }
    run = client.create_run("0").info
    run_id = run.run_id
    client.log_metric(run_id, "gate_passed", 1.0)
    client.log_metric(run_id, "trust_flags", 0.0)
    client.set_terminated(run_id)
    version = str(
        client.create_model_version(
            name, source=f"{run.artifact_uri}/model", run_id=run_id, tags=tags
        ).version
    )
    decision = assign_alias(client, client.tracking_uri, name, version, max_clean_regression=0.01)
    return {"version": version, "alias": decision.alias, "reason": decision.reason}


def worker(url: str, machine: str, unguarded: bool) -> None:
    """Read one order per line from stdin; at its start time, register and decide; answer."""
    from mlflow import MlflowClient

    from iocane.registry import aliases, lease

    if unguarded:  # today's behaviour: each machine's file lock, nothing across machines
        aliases.shared_registry = lambda uri: False
    waits = []
    wait_for_turn = lease._wait_for_turn

    def counted(seconds: float) -> None:  # to report whether this decision queued for the lease
        waits.append(seconds)
        wait_for_turn(seconds)

    lease._wait_for_turn = counted
    client = MlflowClient(tracking_uri=url)
    for line in sys.stdin:
        order = json.loads(line)
        time.sleep(max(0.0, order["start_at"] - time.time()))
        waits.clear()
        try:
            answer = {"machine": machine, **_register_and_decide(client, order)}
            answer["queued"] = bool(waits)
        except Exception:  # reported to the parent: a crash is an outcome the test counts
            answer = {"machine": machine, "error": traceback.format_exc()[-2000:]}
        print(RESULT + json.dumps(answer), flush=True)


@dataclass
class Outcome:
    trials: int = 0
    decisions: int = 0
    contended: int = 0  # trials where a decision queued behind another machine's
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.trials} concurrent trials, {self.decisions} decisions checked, "
            f"{self.contended} trials with a decision queued for the lease, "
            f"{len(self.failures)} failures"
        )


def check_trial(client, name: str, orders: list[dict], answers: list[dict]) -> list[str]:
    """What is wrong with the registry after one trial (empty when the rules held)."""
    from iocane.registry.aliases import champion_stack
    from iocane.registry.lease import lease_model_name

    problems = [f"{a['machine']} crashed: {a['error']}" for a in answers if "error" in a]
    if problems:
        return problems
    robust = {a["version"]: o["robust"] for o, a in zip(orders, answers, strict=True)}
    aliases = {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}
    best = max(robust, key=robust.get)
    champion = aliases.get("champion")
    if champion != best:
        problems.append(f"champion is v{champion}, the rules choose v{best} (robust {robust})")
    stack = champion_stack(client, name)
    crowned = sorted(a["version"] for a in answers if a["alias"] == "champion")
    if sorted(stack) != crowned or len(set(stack)) != len(stack):
        problems.append(f"champion_stack {stack} does not record the moves to {crowned}")
    elif stack and stack[-1] != champion:
        problems.append(f"champion_stack {stack} does not end with the champion v{champion}")
    if any(robust[a] >= robust[b] for a, b in itertools.pairwise(stack)):
        problems.append(f"champion_stack {stack} has a move to a less robust version: {robust}")
    if aliases.get("challenger") is not None and aliases.get("challenger") == champion:
        problems.append("challenger and champion are the same version")
    tickets = client.search_model_versions(f"name='{lease_model_name(name)}'")
    if tickets:
        problems.append(f"lease tickets left behind: {[t.version for t in tickets]}")
    return problems


def run_trials(
    url: str, root: Path, *, trials: int, machines: int, unguarded: bool = False, seed: int = 0
) -> Outcome:
    """``trials`` trials of ``machines`` workers deciding at once; each trial gets a fresh
    registered model, and each machine a random rank of robustness (the best dominates)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    rng = random.Random(seed)
    stamp = time.strftime("%H%M%S")
    workers = []
    for index in range(machines):
        home = root / f"machine-{index}"
        (home / ".cache").mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "tests.helpers.registry_race", "--worker", "--url", url]
        command += ["--machine", f"machine-{index}"] + (["--unguarded"] if unguarded else [])
        env = {
            **os.environ,
            "XDG_CACHE_HOME": str(home / ".cache"),
            "IOCANE_USER": "race",
            # The worker runs in the machine's own directory: this module must still import.
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(PROJECT), os.environ.get("PYTHONPATH")])
            ),
        }
        workers.append(
            subprocess.Popen(
                command,
                cwd=home,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=(home / "worker.log").open("w"),
                text=True,
            )
        )
    outcome = Outcome()
    try:
        for trial in range(trials):
            name = f"race-{stamp}-{trial}-{'unguarded' if unguarded else 'guarded'}"
            client.create_registered_model(name)
            ranks = rng.sample(range(machines), machines)
            start_at = time.time() + 1.0
            orders = [
                {
                    "name": name,
                    "machine": f"machine-{index}",
                    "robust": 0.70 + 0.02 * rank,
                    "clean": 0.90 + 0.005 * rank,
                    "start_at": start_at + rng.uniform(0.0, 0.3),
                }
                for index, rank in enumerate(ranks)
            ]
            for process, order in zip(workers, orders, strict=True):
                process.stdin.write(json.dumps(order) + "\n")
                process.stdin.flush()
            answers = [_answer(process) for process in workers]
            outcome.trials += 1
            outcome.decisions += sum("error" not in answer for answer in answers)
            outcome.contended += any(answer.get("queued") for answer in answers)
            outcome.failures += [
                f"trial {trial}: {p}" for p in check_trial(client, name, orders, answers)
            ]
    finally:
        for process in workers:
            process.stdin.close()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return outcome


def _answer(process: subprocess.Popen) -> dict:
    for line in process.stdout:
        if line.startswith(RESULT):
            return json.loads(line.removeprefix(RESULT))
    return {"machine": "?", "error": f"worker exited with {process.wait()}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--machine", default="machine-0")
    parser.add_argument("--unguarded", action="store_true")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--machines", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("race"))
    args = parser.parse_args()
    if args.worker:
        worker(args.url, args.machine, args.unguarded)
        return
    outcome = run_trials(
        args.url, args.root, trials=args.trials, machines=args.machines, unguarded=args.unguarded
    )
    print(outcome.summary())
    for failure in outcome.failures:
        print(failure)


if __name__ == "__main__":
    main()
