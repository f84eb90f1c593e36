"""Training at the speed of the hardware: no host synchronisation inside a training step, bf16
autocast where asked, channels-last batches, and the runtime settings resolved at run time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.overrides import TorchFunctionMode

from attacks import PGD
from attacks.threat import make_generator, threat_model
from iocane.base.config import RuntimeConfig
from iocane.base.layout import Layout
from iocane.robustness.suite import evaluate_robustness
from iocane.training.hardware import Hardware, resolve_hardware
from iocane.training.loop import fit
from iocane.training.recipes import METHODS, Recipe, train_step
from models import ModelSpec, build_model
from tests.helpers.tiny_training import adversarial_recipe, constant_lr, digits_split

SPEC = ModelSpec("small_cnn", 1, 8, 10, (0.3,), (0.4,), width=4)
CPU = torch.device("cpu")

# Calls that copy a device value to the host, and so wait for the device to finish.
SYNCING_CALLS = {
    "item",
    "tolist",
    "cpu",
    "numpy",
    "nonzero",
    "masked_select",
    "unique",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
}


class HostSyncRecorder(TorchFunctionMode):
    """Records every tensor call that would synchronise a CUDA device with the host: reading a
    value (``item``, ``bool``), data-dependent shapes (``nonzero``, boolean-mask indexing).
    Works on CPU, where nothing actually waits, so the property is testable without a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in SYNCING_CALLS:
            self.calls.append(name)
        if name in ("__getitem__", "__setitem__") and _has_boolean_index(args[1]):
            self.calls.append(f"{name}[boolean mask]")
        return func(*args, **kwargs)


def _has_boolean_index(index: object) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(part, torch.Tensor) and part.dtype == torch.bool for part in parts)


def _recipe(method: str) -> Recipe:
    return adversarial_recipe(
        norm="Linf",
        eps=0.1,
        step_size=0.04,
        steps=3,
        random_start=True,
        adv_weight=1.0 if method != "alp" else 0.5,
        eps_ramp_epochs=0,
        method=method,
    )


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits()
    images = torch.tensor(digits.images[:32] / 16.0, dtype=torch.float32).unsqueeze(1)
    return images, torch.tensor(digits.target[:32])


@pytest.mark.parametrize("method", [None, *METHODS])
def test_a_training_step_never_waits_on_the_host(method: str | None) -> None:
    torch.manual_seed(0)
    model = build_model(SPEC)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    images, labels = _batch()
    recipe = None if method is None else _recipe(method)
    free_delta = torch.zeros_like(images)
    for batch in range(2):  # both halves of multi's alternation
        with HostSyncRecorder() as recorder:
            stats = train_step(
                model,
                optimizer,
                images,
                labels,
                recipe=recipe,
                eps=0.1,
                seed=7,
                batch=batch,
                free_delta=free_delta,
            )
        assert recorder.calls == [], f"{method or 'natural'} synchronises: {recorder.calls}"
    assert torch.isfinite(stats.clean_loss)


def test_the_recorder_catches_a_synchronising_attack() -> None:
    """The check above can fail: PGD with several restarts picks survivors per sample."""
    model = build_model(SPEC).eval()
    images, labels = _batch()
    with HostSyncRecorder() as recorder:
        PGD(eps=0.1, steps=2, restarts=2)(model, images, labels)
    assert "nonzero" in recorder.calls


def test_single_restart_pgd_is_its_one_run() -> None:
    """The sync-free path returns exactly the run the general path would score and keep."""
    torch.manual_seed(0)
    model = build_model(SPEC).eval()
    images, labels = _batch()
    attack = PGD(eps=0.1, steps=3, seed=5)
    fast = attack(model, images, labels)
    slow, _, _ = attack._one_run(
        model, images, labels, threat_model("Linf"), 2.5 * 0.1 / 3, make_generator(5, CPU)
    )
    assert torch.equal(fast, slow)
    assert (fast - images).abs().max() <= 0.1 + 1e-6


@pytest.mark.parametrize(
    ("precision", "device", "bf16"),
    [("auto", "cpu", False), ("fp32", "cpu", False), ("bf16", "cpu", True)],
)
def test_runtime_precision_is_resolved_for_the_device(precision, device, bf16) -> None:
    hardware = resolve_hardware(
        torch.device(device), RuntimeConfig(precision=precision, compile=False)
    )
    assert hardware.bf16 is bf16
    assert hardware.channels_last is True


def _keeps_subnormals() -> bool:
    """Whether the CPU computes with subnormal floats (1e-40 is below float32's smallest
    normal, 1.2e-38) rather than flushing them to zero."""
    return (torch.tensor([1e-40]) * 1.0).item() != 0.0


class _ProbeAttack:
    """An attack that leaves the images alone and records the float mode it ran under."""

    name = "probe"

    def __init__(self) -> None:
        self.kept_subnormals: list[bool] = []

    def __call__(self, model, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.kept_subnormals.append(_keeps_subnormals())
        return images


def test_training_and_evaluation_flush_subnormal_floats_inside_and_restore_them_after(
    tmp_path: Path,
) -> None:
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU has no flush-to-zero mode")
    script = (
        "import torch, iocane, tasks.train, tasks.evaluate, iocane.robustness.suite;"
        "print((torch.tensor([1e-40]) * 1.0).item() != 0.0)"
    )
    imported = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert imported.stdout.strip() == "True", imported.stderr  # importing changes nothing
    assert _keeps_subnormals()

    probe = _ProbeAttack()
    model = build_model(SPEC).eval()
    images = torch.rand(4, 1, 8, 8)
    labels = model(images).argmax(1)  # clean-correct, so the attack runs
    evaluate_robustness(model, images, labels, eps=0.1, attacks={"probe": probe})
    assert probe.kept_subnormals == [False]  # flushed while the suite ran
    assert _keeps_subnormals()  # and as it was after

    seen: list[bool] = []
    model.register_forward_hook(lambda *_: seen.append(_keeps_subnormals()))
    _fit_digits(
        model,
        Layout(tmp_path),
        resolve_hardware(CPU, RuntimeConfig(precision="fp32", compile=False)),
        epochs=1,
    )
    assert seen and not any(seen)  # every training and validation forward pass
    assert _keeps_subnormals()

    torch.set_flush_denormal(True)  # a caller's own choice is what it finds again
    evaluate_robustness(model, images, labels, eps=0.1, attacks={"probe": probe})
    assert not _keeps_subnormals()
    torch.set_flush_denormal(False)


# Run in a fresh process: the entry point under test, with the command or stage it would run
# replaced by a probe that counts the subnormal floats a two-thread op keeps, in this thread and
# in a thread started after.
_ENTRY_PROBE = """
import sys, threading, torch
import iocane.cli.commands, iocane.stages

def kept_subnormals():
    # Made and counted through their bits (2**-129, a subnormal float32), which the mode does
    # not touch: only the product, split across two threads, shows it.
    subnormals = torch.full((4_000_000,), 1 << 20, dtype=torch.int32).view(torch.float32)
    return int(((subnormals * 1.0).view(torch.int32) != 0).sum())

def probe(*_):
    torch.set_num_threads(2)
    in_thread = []
    thread = threading.Thread(target=lambda: in_thread.append(kept_subnormals()))
    thread.start(); thread.join()
    print(kept_subnormals(), in_thread[0])
    return 0

entry, name = sys.argv[1:]
if entry == "cli":
    iocane.cli.commands.main = probe
    sys.argv = ["iocane", name]
    iocane.cli.commands.console_main()
else:
    def stage(config, layout):
        probe()
        return {"passed": True}

    iocane.stages.stage_function = lambda _: stage
    iocane.stages.main([name], own_process=True)
"""


@pytest.mark.parametrize(
    ("entry", "name", "flushed"),
    [
        ("cli", "run", True),
        ("cli", "evaluate", True),
        ("cli", "review", False),
        ("stage", "train", True),
        ("stage", "gate", False),
    ],
)
def test_iocanes_own_processes_flush_subnormals_in_every_thread_from_the_start(
    tmp_path: Path, entry: str, name: str, flushed: bool
) -> None:
    """The console script and a stage process set the mode before any thread starts, so torch's
    intra-op workers and later threads inherit it (set afterwards, a two-thread op keeps about
    half); commands and stages that do not train or attack leave it alone."""
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU has no flush-to-zero mode")
    (tmp_path / "params.yaml").write_text(Path("params.yaml").read_text())
    result = subprocess.run(
        [sys.executable, "-c", _ENTRY_PROBE, entry, name],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    kept, kept_in_a_new_thread = result.stdout.split()[-2:]
    expected = "0" if flushed else "4000000"
    assert (kept, kept_in_a_new_thread) == (expected, expected)


def test_bf16_autocast_covers_the_attack_and_the_loss_but_not_the_backward_or_weights() -> None:
    torch.manual_seed(0)
    model = build_model(SPEC)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    images, labels = _batch()
    hardware = Hardware(CPU, bf16=True, channels_last=False, compile=False)
    output_dtypes: list[torch.dtype] = []
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda module, args, out: output_dtypes.append(out.dtype))
    train_step(
        model,
        optimizer,
        images,
        labels,
        recipe=_recipe("pgd"),
        eps=0.1,
        seed=0,
        batch=0,
        free_delta=images * 0,
        autocast=hardware.autocast,
    )
    # 3 attack steps, the reported clean pass and the training pass, all in bf16
    assert output_dtypes == [torch.bfloat16] * 5
    assert all(p.dtype == torch.float32 for p in model.parameters()), "weights stay float32"


def _fit_digits(model: nn.Module, layout: Layout, hardware: Hardware, epochs: int) -> dict:
    """``fit`` with PGD on 128 digits (32 to validate on), at a constant lr."""
    optim = constant_lr(epochs)
    return fit(
        stage="train",
        model=model,
        spec=SPEC,
        data=digits_split(128, 32),
        optim=optim,
        recipe=_recipe("pgd"),
        val_attack=PGD(eps=0.1, steps=2, seed=1),
        layout=layout,
        seed=3,
        run_key="key",
        device=CPU,
        hardware=hardware,
    )


@pytest.mark.parametrize(
    "hardware",
    [
        Hardware(CPU, bf16=True, channels_last=False, compile=False),
        Hardware(CPU, bf16=False, channels_last=True, compile=False),
    ],
    ids=["bf16", "channels-last"],
)
def test_fit_trains_under_each_runtime_setting(tmp_path: Path, hardware: Hardware) -> None:
    torch.manual_seed(0)
    model = build_model(SPEC)
    final = _fit_digits(model, Layout(tmp_path), hardware, epochs=2)
    assert final["precision"] == ("bf16" if hardware.bf16 else "fp32")
    assert final["train_clean_loss"] < 2.3, "it learned something: below chance-level loss"
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_training_step_never_synchronises() -> None:
    """On a GPU, torch itself reports any synchronisation; bf16 and channels-last are on."""
    device = torch.device("cuda")
    hardware = resolve_hardware(device, RuntimeConfig(precision="auto", compile=False))
    model = hardware.place_model(build_model(SPEC))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    images, labels = (tensor.to(device) for tensor in _batch())
    images = hardware.batch(images)
    free_delta = torch.zeros_like(images)
    for method in METHODS:
        train_step(  # once outside the check: the first call initialises CUDA state
            model,
            optimizer,
            images,
            labels,
            recipe=_recipe(method),
            eps=0.1,
            seed=0,
            batch=0,
            free_delta=free_delta,
        )
        torch.cuda.set_sync_debug_mode("error")
        try:
            for batch in range(2):
                train_step(
                    model,
                    optimizer,
                    images,
                    labels,
                    recipe=_recipe(method),
                    eps=0.1,
                    seed=batch,
                    batch=batch,
                    free_delta=free_delta,
                    autocast=hardware.autocast,
                )
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
