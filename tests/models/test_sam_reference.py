"""The SAM MFNet computes what it computed before the encoder interface: fixed-seed tiny models against stored logits.

``data/sam_reference_logits.json`` was written by this file's `_logits` on main at e7eac6b / b776fe2 (before
encoders other than SAM existed): every eighth pixel of each class map of a 2-chip batch, MMLoRA (with non-zero B,
so the low-rank path counts) and MMAdapter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import get_peft_model

from mfpeft import MFNetConfig, MFNetForSegmentation
from mfpeft.tuners import MMAdapterConfig, MMLoraConfig
from tests.sam_fixtures import make_tiny_sam

REFERENCE = json.loads((Path(__file__).parent / "data" / "sam_reference_logits.json").read_text())


def _logits(tuner: str) -> torch.Tensor:
    sam = make_tiny_sam(seed=0, image_size=64)
    config = MFNetConfig(vision_config=sam.config, id2label={0: "a", 1: "b", 2: "c"}, decode_channels=16)
    torch.manual_seed(1)
    model = MFNetForSegmentation.from_sam(sam, config)
    torch.manual_seed(2)
    peft_model = get_peft_model(model, MMLoraConfig() if tuner == "mmlora" else MMAdapterConfig()).eval()
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "mmlora_B" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=torch.Generator().manual_seed(3)))
    generator = torch.Generator().manual_seed(4)
    chips = {
        "optical": torch.rand(2, 3, 64, 64, generator=generator),
        "dsm": torch.rand(2, 1, 64, 64, generator=generator),
    }
    with torch.no_grad():
        return peft_model(pixel_values=chips).logits


@pytest.mark.parametrize("tuner", ["mmlora", "mmadapter"])
def test_sam_mfnet_logits_equal_the_stored_reference(tuner: str) -> None:
    logits = _logits(tuner)
    reference = REFERENCE[tuner]
    assert list(logits.shape) == reference["shape"]
    grid = logits[:, :, ::8, ::8].flatten().double()
    expected = torch.tensor(reference["grid"], dtype=torch.float64)
    assert grid.abs().max() > 1e-4  # the reference is no all-zero map
    torch.testing.assert_close(grid, expected, rtol=1e-5, atol=1e-8)
    assert logits.double().sum().item() == pytest.approx(reference["sum"], rel=1e-5)
