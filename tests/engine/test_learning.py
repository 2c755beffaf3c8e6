"""Learning is real on the demo set: the loss falls, validation mIoU rises, and the DSM is used.

Full demo-preset runs (a few minutes each on 2 cores, seed 42): marked slow, run by CI's slow job. The runs are
shared by the tests of this module.
"""

from __future__ import annotations

from typing import Any

import pytest

from mfpeft.engine.command_line import parse_training_arguments
from mfpeft.engine.training import train

BUILDING, TREE = 1, 3  # flat roofs coloured like the roads, trees coloured like the lawns: only height tells


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """metrics.json of the demo preset with MMLoRA, with the frozen encoder, and optical-only, run lazily."""
    root = tmp_path_factory.mktemp("demo-runs")
    flags = {
        "mmlora": ["--tuner", "mmlora"],
        "none": ["--tuner", "none"],
        "optical": ["--tuner", "mmlora", "--modalities", "optical"],
    }
    cache: dict[str, Any] = {}

    class Runs(dict):  # type: ignore[type-arg]
        def __missing__(self, name: str) -> Any:
            args = parse_training_arguments(["--preset", "demo", "--output-dir", str(root / name), *flags[name]])
            cache[name] = train(args).metrics
            self[name] = cache[name]
            return cache[name]

    return Runs()


@pytest.mark.slow
def test_demo_run_learns_and_fusion_beats_optical_only(demo_runs: dict[str, Any]) -> None:
    fused, optical = demo_runs["mmlora"], demo_runs["optical"]
    history = [entry["loss"] for entry in fused["history"]]
    assert history[-1] < 0.6 * history[0], history
    curve = [entry["val_mIoU"] for entry in fused["history"]]
    assert curve[-1] > curve[0] + 0.08 and curve[-1] > 0.60, curve
    # measured (demo:tiny encoder, 600 steps): test IoU building 0.94 / tree 0.74 with the DSM, 0.68 / 0.00
    # optical only, test mIoU 0.717 vs 0.456 (seed 42); seed 7 / data seed 7: 0.89 / 0.83 vs 0.76 / 0.00, 0.717 vs 0.509
    fused_iou, optical_iou = fused["test"]["per_class_iou"], optical["test"]["per_class_iou"]
    assert fused_iou[BUILDING] > optical_iou[BUILDING] + 0.12
    assert fused_iou[TREE] > optical_iou[TREE] + 0.40
    assert fused["test"]["mean_iou"] > optical["test"]["mean_iou"] + 0.10


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="measured: on the demo the tuner adds nothing over the frozen encoder (val mIoU 0.727 vs 0.722, tree "
    "0.71 vs 0.69; seed 7: 0.739 vs 0.735); the trainable head does the work. Remove once a demo encoder shows it.",
)
def test_demo_tuner_beats_the_frozen_encoder_on_height_classes(demo_runs: dict[str, Any]) -> None:
    tuned, frozen = demo_runs["mmlora"], demo_runs["none"]
    for cls in (BUILDING, TREE):
        assert tuned["validation"]["per_class_iou"][cls] > frozen["validation"]["per_class_iou"][cls] + 0.05
    assert tuned["validation"]["mean_iou"] > frozen["validation"]["mean_iou"] + 0.03
