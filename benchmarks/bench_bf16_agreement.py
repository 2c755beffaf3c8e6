"""How far bf16 (autocast, bf16 frozen weights) and padding-free inference move a trained MFNet's predictions.

Loads a trained adapter folder (as written by training), generates demo scenes (`mfpeft.data.demo`), scales
them as the demo preset does (optical / 255, DSM min-max over the scene), cuts chips of the model's size at
half-chip stride and compares, against the stock fp32 path: the argmax agreement over all pixels and the largest
logit difference.

    python benchmarks/bench_bf16_agreement.py --adapter outputs/demo --base-model outputs/demo/base-model
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch


def chips(scene_size: int, seeds: list[int], chip: int) -> dict[str, torch.Tensor]:
    """{"optical": (N, 3, chip, chip), "dsm": (N, 1, chip, chip)} from demo scenes, at stride chip / 2."""
    from mfpeft.data.demo import make_demo_scene

    optical, dsm = [], []
    for seed in seeds:
        scene = make_demo_scene(size=scene_size, seed=seed)
        opt = torch.from_numpy(scene["optical"]).float() / 255
        height = torch.from_numpy(scene["dsm"]).float()
        height = (height - height.min()) / (height.max() - height.min()).clamp_min(1e-6)
        for y in range(0, scene_size - chip + 1, chip // 2):
            for x in range(0, scene_size - chip + 1, chip // 2):
                optical.append(opt[:, y : y + chip, x : x + chip])
                dsm.append(height[:, y : y + chip, x : x + chip])
    return {"optical": torch.stack(optical), "dsm": torch.stack(dsm)}


def predict(model: Any, inputs: dict[str, torch.Tensor], batch: int = 4) -> torch.Tensor:
    outs = []
    with torch.inference_mode():
        for i in range(0, len(inputs["optical"]), batch):
            outs.append(model(pixel_values={k: v[i : i + batch] for k, v in inputs.items()}).logits.float())
    return torch.cat(outs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, required=True, help="trained adapter folder")
    parser.add_argument("--base-model", type=Path, default=None, help="local SAM copy the adapter was trained on")
    parser.add_argument("--scene-size", type=int, default=512)
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/bf16_agreement.json"))
    args = parser.parse_args(argv)

    import mfpeft
    from mfpeft.models.sam.fast_path import optimize_sam_encoder, restore_sam_encoder

    def load() -> Any:
        """The trained model on transformers' stock SAM layers (MFNet loads padding-free by default)."""
        loaded = mfpeft.MFNetForSegmentation.from_pretrained(args.adapter, base_model=args.base_model).eval()
        restore_sam_encoder(loaded)
        return loaded

    model = load()
    inputs = chips(args.scene_size, args.seeds, model.config.image_size)
    reference = predict(model, inputs)
    settings: dict[str, dict[str, Any]] = {
        "padding-free fp32": {"padding_free": True},
        "bf16 autocast": {"padding_free": True, "autocast_dtype": "bf16"},
        "bf16 weights": {"padding_free": True, "frozen_dtype": "bf16"},
    }
    report: dict[str, Any] = {"adapter": str(args.adapter), "chips": len(inputs["optical"]), "results": {}}
    for name, kwargs in settings.items():
        optimize_sam_encoder(model, **kwargs)
        logits = predict(model, inputs)
        restore_sam_encoder(model)  # bf16 storage rounds the weights: reload for the next setting
        if kwargs.get("frozen_dtype"):
            model = load()
        agreement = (logits.argmax(1) == reference.argmax(1)).float().mean().item()
        diff = (logits - reference).abs().max().item()
        report["results"][name] = {
            "argmax_agreement": agreement,
            "max_abs_logit_diff": diff,
            "max_abs_logit": reference.abs().max().item(),
        }
        print(f"{name}: argmax agreement {100 * agreement:.3f}% of pixels, max |logit diff| {diff:.2e}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
