"""Training through Accelerate on the demo set: ablation smoke runs, outputs, resume after SIGKILL, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mfpeft
from mfpeft.cli.training import parse_training_arguments
from mfpeft.engine.arguments import DEMO_PRESET, TrainingArguments
from mfpeft.engine.training import idle_cores_notice, make_optimizer, train
from mfpeft.models.sam.loading import SamLoadError
from tests.smoke import smoke_flags

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "train.py"

# A pipeline-sized run: the demo city, a tiny random SAM, 64-pixel chips, two steps.
SMOKE = smoke_flags()


def smoke_args(tmp_path: Path, *extra: str) -> TrainingArguments:
    return parse_training_arguments([*SMOKE, "--output-dir", str(tmp_path / "run"), *extra])


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        ["--tuner", "mmlora", "--rank", "2"],
        ["--tuner", "mmadapter"],
        ["--tuner", "lora"],
        ["--tuner", "adapter"],
        ["--tuner", "none"],
        ["--modalities", "optical"],
        ["--no-dfm"],
        ["--train-fraction", "0.5"],
        ["--encoder-dtype", "bf16", "--gradient-checkpointing"],
        ["--no-padding-free"],
    ],
    ids=[
        "mmlora",
        "mmadapter",
        "lora",
        "adapter",
        "frozen",
        "optical-only",
        "no-dfm",
        "half-data",
        "fast-encoder",
        "stock-encoder",
    ],
)
def test_every_ablation_switch_trains_and_saves(tmp_path: Path, extra: list[str]) -> None:
    args = smoke_args(tmp_path, *extra)
    result = train(args)
    out = result.output_dir
    assert result.steps == 2
    for name in ("config.json", "adapter_config.json", "adapter_model.safetensors", "README.md", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test"]["mean_iou"] <= 1 and metrics["selected_step"] == 2
    config = json.loads((out / "config.json").read_text())
    if "--modalities" in extra:
        assert [m[0] for m in config["modalities"]] == ["optical"]
    if "--no-dfm" in extra:
        assert config["use_dfm"] is False
    assert config["padding_free_encoder"] is ("--no-padding-free" not in extra)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["cross_modal"] == (args.tuner in ("mmlora", "mmadapter")) or "--modalities" in extra
    # the saved folder reloads as a ready model
    model = mfpeft.MFNetForSegmentation.from_pretrained(out)
    pixel_values = {name: torch.rand(1, channels, 64, 64) for name, channels in config["modalities"]}
    assert model(pixel_values=pixel_values).logits.shape == (1, 6, 64, 64)


@pytest.mark.slow
def test_frozen_encoder_run_trains_only_the_head(tmp_path: Path) -> None:
    train(smoke_args(tmp_path, "--tuner", "none"))
    weights = load_file(tmp_path / "run" / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "mmlora_B" in k]
    assert lora_b and all(not v.any() for v in lora_b), "frozen-encoder run must leave B = 0"


def test_a_run_writes_its_outputs_and_pushes_the_adapter(tmp_path: Path, hub_uploads: dict[str, bytes]) -> None:
    uploaded = hub_uploads
    result = train(
        smoke_args(
            tmp_path, "--checkpoint-every", "1", "--checkpoints-total-limit", "1", "--push-to-hub", "user/mfnet-demo"
        )
    )
    out = result.output_dir
    assert result.steps == 2
    for name in ("config.json", "adapter_config.json", "adapter_model.safetensors", "README.md", "metrics.json"):
        assert (out / name).is_file(), name
    for name in ("confusion_matrix.png", "per_class.png", "preview.png"):
        assert (out / name).stat().st_size > 5_000, name
    assert len(list((out / "checkpoints").iterdir())) == 1, "rotation keeps checkpoints_total_limit states"
    card = (out / "README.md").read_text()
    assert "test_mIoU" in card and "MMLoRA" in card
    assert "## Training" in card and "| optimizer | adamw |" in card and "| learning_rate | 0.001 |" in card
    assert "| steps | 2 |" in card and "| batch_size | 2 per process x 1 |" in card
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("overall_accuracy", "mean_f1", "mean_iou", "kappa", "per_class_f1", "per_class_iou"):
        assert key in metrics["test"]
    assert metrics["validation"]["mean_iou"] == metrics["history"][-1]["val_mIoU"]
    adapter_files = ["README.md", "adapter_config.json", "adapter_model.safetensors", "config.json"]
    assert sorted(k for k in uploaded if "/" not in k) == adapter_files
    assert {k for k in uploaded if "/" in k} == {f"base-model/{p.name}" for p in (out / "base-model").iterdir()}
    assert b"test_mIoU" in uploaded["README.md"]
    assert uploaded["adapter_model.safetensors"] == (out / "adapter_model.safetensors").read_bytes()


def run_recipe(args: list[str], **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(RECIPE), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    common = [
        "--preset",
        "demo",
        "--base-model",
        "random:tiny",
        "--chip-size",
        "128",
        "--batch-size",
        "2",
        "--max-steps",
        "8",
        "--checkpoint-every",
        "2",
        "--eval-every",
        "4",
        "--eval-stride",
        "128",
        "--seed",
        "7",
    ]
    straight = run_recipe([*common, "--output-dir", str(tmp_path / "straight")])
    output, _ = straight.communicate(timeout=600)
    assert straight.returncode == 0, output[-3000:]

    killed_dir = tmp_path / "killed"
    victim = run_recipe([*common, "--output-dir", str(killed_dir)])
    first = killed_dir / "checkpoints" / "checkpoint_2"  # named by step; renamed into place once complete
    deadline = time.time() + 600
    while not (first / "manifest.json").exists():
        assert victim.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert not (killed_dir / "adapter_model.safetensors").exists(), "the run finished before it was killed"

    resumed = run_recipe([*common, "--output-dir", str(killed_dir), "--resume-from-checkpoint", "latest"])
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    assert "Resumed from" in output
    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(killed_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_presets_choose_the_optimizer_and_explicit_flags_win(tmp_path: Path) -> None:
    paper = parse_training_arguments(["--preset", "paper"])
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(2))], paper)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["lr"] == 0.01 and optimizer.defaults["momentum"] == 0.9
    assert optimizer.defaults["weight_decay"] == 5e-4
    demo = parse_training_arguments(["--preset", "demo"])
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(2))], demo)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["lr"] == demo.learning_rate == DEMO_PRESET["learning_rate"]
    assert optimizer.defaults["weight_decay"] == DEMO_PRESET["weight_decay"]
    explicit = parse_training_arguments(["--preset", "demo", "--optimizer", "sgd", "--learning-rate", "0.05"])
    assert isinstance(make_optimizer([torch.nn.Parameter(torch.zeros(2))], explicit), torch.optim.SGD)
    assert explicit.learning_rate == 0.05


def test_a_lone_cpu_process_on_fewer_threads_than_cores_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    notice = idle_cores_notice("cpu", 1)
    assert notice is not None and "Using 1 of 2 CPU cores (OMP_NUM_THREADS=1)" in notice
    assert "--num_processes 1" in notice and "OMP_NUM_THREADS=2" in notice
    assert idle_cores_notice("cuda", 1) is None and idle_cores_notice("cpu", 2) is None
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert idle_cores_notice("cpu", 1) is None


def test_bad_input_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tuner='foo'"):
        smoke_args(tmp_path, "--tuner", "foo")
    with pytest.raises(ValueError, match="rank=0"):
        smoke_args(tmp_path, "--rank", "0")
    with pytest.raises(ValueError, match="optimizer='adam' must be one of"):
        smoke_args(tmp_path, "--optimizer", "adam")
    with pytest.raises(ValueError, match="weight_decay=-0.1"):
        smoke_args(tmp_path, "--weight-decay", "-0.1")
    with pytest.raises(ValueError, match="learning_rate=nan"):
        smoke_args(tmp_path, "--learning-rate", "nan")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(smoke_args(tmp_path, "--dataset", "vaihingen", "--data-dir", str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match=r"modalities \['sar'\] are not in data set 'demo'"):
        train(smoke_args(tmp_path, "--modalities", "optical", "sar"))
    with pytest.raises(SamLoadError, match="not found"):
        train(smoke_args(tmp_path, "--base-model", str(tmp_path / "missing-sam.pth")))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(smoke_args(tmp_path, "--resume-from-checkpoint", "latest"))
    assert not (tmp_path / "run" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tuner", "foo"], "tuner='foo' is not one of"),
        (["--rank", "0"], "rank=0 must be a positive integer"),
        (["--preset", "foo"], "preset='foo' is not one of"),
    ],
    ids=["tuner", "rank", "preset"],
)
def test_recipe_reports_bad_input_in_one_line(tmp_path: Path, flags: list[str], message: str) -> None:
    process = run_recipe([*SMOKE, "--output-dir", str(tmp_path / "run"), *flags])
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"train.py: error: {message}")
    assert "Traceback" not in output and not (tmp_path / "run").exists()
