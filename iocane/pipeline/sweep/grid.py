"""The sweep's grid: every combination of the ``sweep`` section's lists (eps, method, PGD steps,
learning rate, model and width, training budget, seed) as named points, and the natural warmups
they share (one per model, width and seed, not per point)."""

from __future__ import annotations

import dataclasses
import itertools
import re

from iocane.base.config import Config, SweepConfig, replace

# A warmup is shared by the points with the same model, width and seed.
WarmupKey = tuple[str, int, int]


@dataclasses.dataclass(frozen=True)
class Point:
    """One point of the grid: its name, how it trains, and the eps it is judged at."""

    name: str
    config: Config  # how this point trains
    threat_eps: float | None = None

    @property
    def judged(self) -> Config:
        """How it is evaluated: at the sweep's threat model (params' train.norm and train.eps),
        whatever eps it trained at, so that every point's robust accuracy means the same."""
        return (
            self.config
            if self.threat_eps is None
            else replace(self.config, train=replace(self.config.train, eps=self.threat_eps))
        )

    @property
    def warmup_key(self) -> WarmupKey:
        """(model name, width, seed): the points that share a natural warmup."""
        return (self.config.model.name, self.config.model.width, self.config.seed)


def slug(text: str) -> str:
    """`text` as a directory name: ``torchvision:resnet18`` becomes ``torchvision_resnet18``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def warmup_directory(key: WarmupKey) -> str:
    """The name of the directory a warmup trains in, under the sweep's."""
    model, width, seed = key
    return f"warmup-{slug(model)}-w{width}-s{seed}"


def _capacities(config: Config) -> list[tuple[str, int]]:
    """(model name, width) pairs: the model axis crossed with the width axis. Widths apply to
    iocane's own models only; a ``torchvision:``, ``timm:`` or your own model takes width 0."""
    sweep = config.sweep
    pairs: list[tuple[str, int]] = []
    for name in sweep.model or (config.model.name,):
        own = ":" not in name
        for width in (sweep.width or (config.model.width,)) if own else (0,):
            if (name, width) not in pairs:
                pairs.append((name, width))
    return pairs


def _point_name(config: Config, swept: SweepConfig) -> str:
    """eps, method and width and seed, as before the model, steps, lr and budget axes; each of
    those is in the name only when the sweep varies it, so older sweeps keep their names."""
    train, model = config.train, config.model
    parts = [slug(model.name)] if swept.model else []
    parts += [f"eps{train.eps:g}", train.method]
    parts += [f"k{train.steps}"] if swept.steps else []
    parts += [f"lr{train.lr:g}"] if swept.lr else []
    parts += [f"w{model.width}"]
    parts += [f"b{train.budget_minutes:g}m"] if swept.budget_minutes else []
    return "-".join([*parts, f"s{config.seed}"])


def grid(config: Config) -> list[Point]:
    """Every combination of the sweep's lists; an empty list keeps the params' own value. A
    swept ``steps`` sets ``train.step_size`` to 2.5 * eps / steps (Madry et al.'s rule), so
    fewer steps take larger ones."""
    sweep = config.sweep
    axes = itertools.product(  # in the order of the original four axes: eps, method, width, seed
        sweep.eps or (config.train.eps,),
        sweep.method or (config.train.method,),
        sweep.steps or (None,),
        sweep.lr or (config.train.lr,),
        _capacities(config),
        sweep.budget_minutes or (config.train.budget_minutes,),
        sweep.seed or (config.seed,),
    )
    points = []
    for eps, method, steps, lr, (name, width), budget, seed in axes:
        train = {"eps": eps, "method": method, "lr": lr, "budget_minutes": budget}
        if steps is not None:
            train.update(steps=steps, step_size=2.5 * eps / steps)
        point = replace(
            config,
            seed=seed,
            train=replace(config.train, **train),
            model=replace(config.model, name=name, width=width),
        )
        points.append(Point(_point_name(point, sweep), point, config.train.eps))
    return points


def warmups(points: list[Point]) -> dict[WarmupKey, Config]:
    """The natural warmups the points need, one per model, width and seed (not per point),
    each trained with the config of the first point that has them."""
    needed: dict[WarmupKey, Config] = {}
    for point in points:
        needed.setdefault(point.warmup_key, point.config)
    return needed
