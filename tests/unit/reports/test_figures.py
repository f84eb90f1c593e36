"""The figures: each one written as a PNG, and the alignment figure's title inside the figure."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg

from iocane.reports.figures import alignment_figure, plot_alignment, plot_curves, plot_examples
from iocane.robustness.alignment import perceptual_alignment
from iocane.robustness.evaluation import example_mix

PNG = b"\x89PNG\r\n\x1a\n"
CLASS_NAMES = [str(i) for i in range(10)]


def test_curves_and_examples_are_written(trained_digits_model, tmp_path: Path) -> None:
    model, images, labels = trained_digits_model
    curves = {
        "Linf": {"eps": [0.0, 0.1, 0.5], "natural": [0.9, 0.1, 0.0], "hardened": [0.9, 0.6, 0.0]}
    }
    plot_curves(curves, {"Linf": 0.1}, tmp_path / "curves.png")
    examples = example_mix(model, images, labels, norm="Linf", eps=0.2, seed=0)
    # up to four images the attack breaks, then ones it does not: at most eight
    broken = examples.adversarial_predictions != examples.labels
    assert 0 < len(broken) <= 8 and broken[: min(4, int(broken.sum()))].all()
    assert examples.clean_predictions.shape == examples.labels.shape
    plot_examples(examples, CLASS_NAMES, tmp_path / "examples.png")
    for name in ("curves.png", "examples.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_the_alignment_figure_is_written_and_its_title_fits(trained_digits_model, tmp_path) -> None:
    model, images, labels = trained_digits_model
    alignment = perceptual_alignment(
        {"natural": model, "hardened": model}, images, labels, 10, "Linf", 0.1
    )
    plot_alignment(alignment, CLASS_NAMES, tmp_path / "alignment.png")
    assert (tmp_path / "alignment.png").read_bytes()[:8] == PNG
    # The title once ran past both edges of the figure: all of it must be inside.
    figure = alignment_figure(alignment, CLASS_NAMES)
    renderer = FigureCanvasAgg(figure).get_renderer()
    title = figure.get_suptitle()
    box = figure._suptitle.get_window_extent(renderer)
    assert "Tsipras et al. 2019" in title and "target class" in title
    assert box.x0 >= 0 and box.x1 <= figure.bbox.width and box.y1 <= figure.bbox.height
