"""The benchmark's Meta-SAM baseline computes mfpeft's model (so the speed comparison is between two
implementations of one function), and it fails loudly when it does not."""

import importlib.util
import sys
from pathlib import Path

import pytest

# Not importorskip: the package's __init__ needs torchvision, which the baseline avoids (it loads two modules).
if importlib.util.find_spec("segment_anything") is None:
    pytest.skip("the Meta-SAM baseline needs the bench extra (segment-anything)", allow_module_level=True)
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import meta_sam_baseline


@pytest.mark.parametrize("tuner", ["mmlora", "mmadapter"])
def test_baseline_equals_mfpeft_on_equal_weights(tuner: str) -> None:
    features, logits = meta_sam_baseline.equal_weights_check("tiny", tuner)
    assert features < 1e-9  # float64 encoders
    assert logits < 1e-4  # float32 head


def test_a_wrong_mixing_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropping the cross-modal term (the other stream's branch) shows up in the check."""
    monkeypatch.setattr(meta_sam_baseline, "_other", lambda streams, m: 0 * streams[m])
    features, _ = meta_sam_baseline.equal_weights_check("tiny", "mmlora")
    assert features > 1e-3


def test_the_baseline_has_the_papers_parameter_counts() -> None:
    """Table VI of the paper: trainable tuner weights of the ViT-B encoder."""
    expected = {"mmlora": 1_032_240, "mmadapter": 14_201_880}
    for tuner, count in expected.items():
        encoder = meta_sam_baseline.meta_image_encoder("vit-b")
        meta_sam_baseline.add_tuner(encoder, tuner, modalities=2)
        assert sum(p.numel() for p in encoder.parameters() if p.requires_grad) == count
