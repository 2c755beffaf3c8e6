"""Training never executes what a checkpoint holds, never loses a finished run, and ends every failure in one line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mfpeft.cli import main as cli_main
from mfpeft.cli.training import parse_training_arguments
from mfpeft.engine import training
from mfpeft.engine.checkpoints import MANIFEST, CheckpointError, find_checkpoint
from mfpeft.engine.training import train
from tests.smoke import smoke_flags

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "train.py"
SMOKE = smoke_flags()


def smoke(out: Path, *extra: str) -> list[str]:
    return [*SMOKE, "--output-dir", str(out), *extra]


class Payload:
    """Unpickling this creates ``path``: the stand-in for an attacker's code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rewrite_manifest(folder: Path) -> None:
    """What an attacker who knows the format does: list the planted file with its real size and hash."""
    manifest = json.loads((folder / MANIFEST).read_text())
    for path in folder.iterdir():
        if path.name != MANIFEST:
            data = path.read_bytes()
            manifest["files"][path.name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-step run with a checkpoint after each step (both kept)."""
    out = tmp_path_factory.mktemp("checkpointed") / "run"
    train(parse_training_arguments(smoke(out, "--checkpoint-every", "1", "--checkpoints-total-limit", "2")))
    return out


def test_checkpoints_hold_no_pickled_objects_and_verify(checkpointed_run: Path) -> None:
    folders = sorted((checkpointed_run / "checkpoints").iterdir())
    assert [p.name for p in folders] == ["checkpoint_1", "checkpoint_2"], "complete, named by step, none partial"
    names = {p.name for p in folders[-1].iterdir()}
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "trainer_state.json", MANIFEST} <= names
    assert not any(n.startswith("custom_checkpoint") for n in names)
    state = json.loads((folders[-1] / "trainer_state.json").read_text())
    assert state["train_state"]["step"] == 2 and state["scheduler"]["last_epoch"] == 2
    assert find_checkpoint(checkpointed_run, "latest") == folders[-1]


PLANTED = [
    "custom_checkpoint_0.pkl",
    "optimizer.bin",
    "random_states_0.pkl",
    "model.safetensors",
    "trainer_state.json",
    "scheduler.bin",
]


@pytest.mark.parametrize(
    ("planted", "listed"),
    [*((name, True) for name in PLANTED), *((name, False) for name in [*PLANTED, MANIFEST])],
    ids=[*(f"{n}-in-manifest" for n in PLANTED), *(f"{n}-unlisted" for n in [*PLANTED, MANIFEST])],
)
def test_a_crafted_pickle_in_a_checkpoint_never_runs(
    checkpointed_run: Path, tmp_path: Path, planted: str, listed: bool
) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "shared-checkpoint"
    shutil.copytree(checkpointed_run / "checkpoints" / "checkpoint_2", folder)
    torch.save({"state": Payload(marker)}, folder / planted)
    if listed:
        rewrite_manifest(folder)
    status = cli_main(["train", *smoke(tmp_path / "resumed", "--resume-from-checkpoint", str(folder))])
    assert not marker.exists(), f"unpickling {planted} ran the payload"
    assert status == 1
    assert not (tmp_path / "resumed").exists(), "a refused resume creates nothing"


def test_the_refusal_is_one_line_naming_the_file(
    checkpointed_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpointed_run / "checkpoints" / "checkpoint_2", folder)
    torch.save({"state": Payload(tmp_path / "pwned")}, folder / "optimizer.bin")
    rewrite_manifest(folder)
    capsys.readouterr()
    assert cli_main(["train", *smoke(tmp_path / "resumed", "--resume-from-checkpoint", str(folder))]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert str(folder / "optimizer.bin") in err[0] and "unpickled" in err[0]


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous(
    checkpointed_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(checkpointed_run, run)
    newest = run / "checkpoints" / "checkpoint_2" / "optimizer.bin"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # killed mid-write, renamed anyway
    assert find_checkpoint(run, "latest", say=print) == run / "checkpoints" / "checkpoint_1"
    assert "Skipping checkpoint_2" in capsys.readouterr().out
    result = train(parse_training_arguments(smoke(run, "--resume-from-checkpoint", "latest")))
    assert result.steps == 2
    with pytest.raises(CheckpointError, match="sha256"):
        find_checkpoint(run, str(run / "checkpoints" / "checkpoint_2"))


def test_the_same_command_twice_is_refused_and_the_first_run_kept(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(parse_training_arguments(smoke(out)))
    before = snapshot(out)
    with pytest.raises(ValueError, match="already holds a run.*--resume-from-checkpoint latest.*--overwrite"):
        train(parse_training_arguments(smoke(out)))
    assert snapshot(out) == before, "a refused run changes nothing"


def test_overwrite_replaces_the_old_run_only_at_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    train(parse_training_arguments(smoke(out)))
    before = snapshot(out)

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("stopped before the end")

    with monkeypatch.context() as patch:  # a run that fails in its test evaluation, after training
        patch.setattr(training, "evaluate_tiles", fail)
        with pytest.raises(RuntimeError):
            train(parse_training_arguments(smoke(out, "--overwrite", "--seed", "1")))
    assert snapshot(out) == before, "the old run is untouched until the new one is saved"
    train(parse_training_arguments(smoke(out, "--overwrite", "--seed", "1")))
    after = snapshot(out)
    assert after["adapter_model.safetensors"] != before["adapter_model.safetensors"]
    assert json.loads(after["config.json"])["encoder_name_or_path"] == "./base-model"  # not the staging folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "no staging or replaced folder is left"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--learning-rate", "inf"], "learning_rate=inf must be a finite positive number"),
        (["--weight-decay", "inf"], "weight_decay=inf must be a finite number"),
        (["--momentum", "-1"], "momentum=-1.0 must be in [0, 1)"),
        (["--lr-gamma", "-1"], "lr_gamma=-1.0 must be a finite positive number"),
        (["--base-model", "random:vit-x"], "names no encoder"),
        (["--rank", "0"], "rank=0 must be a positive integer"),
        (["--preset", "foo"], "preset='foo' is not one of"),
        (["--chip-size", "2048"], "--chip-size 2048 is larger than every training tile"),
        (["--resume-from-checkpoint", "latest"], "no checkpoint in"),
        (["--base-model", "/nowhere/sam_vit_b.pth"], "/nowhere/sam_vit_b.pth"),
    ],
    ids=["lr-inf", "wd-inf", "momentum", "gamma", "random-size", "rank", "preset", "chip", "resume", "sam-path"],
)
def test_bad_training_input_is_one_line_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    out = tmp_path / "run"
    assert cli_main(["train", *smoke(out), *flags]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("mfpeft train: error: ") and message in err[0] and "Traceback" not in err[0]
    assert not out.exists(), "nothing is created on disk before the input is checked"


def launch(argv: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(RECIPE), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["term", "int"])
def test_a_signalled_run_keeps_its_checkpoints_and_says_how_to_resume(tmp_path: Path, signum: int, status: int) -> None:
    out = tmp_path / "run"
    process = launch(smoke(out, "--max-steps", "400", "--checkpoint-every", "1", "--eval-every", "1000"))
    deadline = time.time() + 120
    while not (out / "checkpoints" / "checkpoint_1" / MANIFEST).exists():
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == status, err[-2000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("train.py:")]
    assert len(lines) == 1 and f"interrupted by {signal.Signals(signum).name}" in lines[0]
    assert "--resume-from-checkpoint latest" in lines[0]
    stale = (".incomplete", ".saving", ".tmp")
    leftovers = [p.name for p in out.rglob("*") if p.name.endswith(stale) or ".partial-" in p.name]
    assert not leftovers, leftovers
    newest = find_checkpoint(out, "latest")
    step = int(newest.name.split("_")[1])
    resumed = train(
        parse_training_arguments(
            smoke(out, "--max-steps", str(step + 1), "--resume-from-checkpoint", "latest", "--eval-every", "1000")
        )
    )
    assert resumed.steps == step + 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A 600 kB tmpfs: room for the data checks, not for the encoder's copy."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_with_the_size_and_leaves_nothing_partial(
    small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = small_disk / "run"
    assert cli_main(["train", *smoke(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on the device" in err[0] and "MB free" in err[0], err
    assert "needs about" in err[0]
    assert not [p for p in small_disk.rglob("*") if p.is_file()], "no partial file is left on the full disk"


def write_palette_folder(root: Path, corner: tuple[int, int, int] | None = None, nan_dsm: bool = False) -> Path:
    """Two 128² training tiles and one test tile in the ISPRS palette; ``corner`` paints 4 px of the last
    training tile's bottom-right corner in another colour; ``nan_dsm`` makes the test tile's DSM all NaN."""
    from mfpeft.data.palette import ISPRS_PALETTE

    from ..rasters import write_raster

    rng = np.random.default_rng(0)
    for split, names in (("train", ("a", "b")), ("test", ("c",))):
        (root / split).mkdir(parents=True)
        for name in names:
            classes = rng.integers(0, 6, (128, 128))
            rgb = np.asarray(ISPRS_PALETTE, np.uint8)[classes].transpose(2, 0, 1).copy()
            if corner is not None and name == "b":
                rgb[:, -2:, -2:] = np.asarray(corner, np.uint8)[:, None, None]
            dsm = rng.normal(10, 3, (1, 128, 128)).astype(np.float32)
            if nan_dsm and name == "c":
                dsm[:] = np.nan
            write_raster(root / split / f"{name}_label.tif", rgb)
            write_raster(root / split / f"{name}_rgb.tif", rng.integers(1, 255, (3, 128, 128)).astype(np.uint8))
            write_raster(root / split / f"{name}_dsm.tif", dsm)
    return root


def folder_flags(root: Path) -> list[str]:
    return [
        "--dataset",
        "folder",
        "--data-dir",
        str(root),
        "--optical",
        "*_rgb.tif",
        "--dsm",
        "*_dsm.tif",
        "--labels",
        "*_label.tif",
    ]


@pytest.mark.parametrize("case", ["bad-colour", "nan-dsm"])
def test_inputs_are_scanned_before_the_first_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    root = write_palette_folder(
        tmp_path / "data", corner=(7, 7, 7) if case == "bad-colour" else None, nan_dsm=case == "nan-dsm"
    )
    steps: list[int] = []
    monkeypatch.setattr(training, "make_optimizer", lambda *a: steps.append(1) or torch.optim.SGD(a[0], lr=0.1))
    status = cli_main(["train", *smoke(tmp_path / "run"), *folder_flags(root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    assert not steps, "the check ran before the optimizer was even built"
    if case == "bad-colour":
        assert str(root / "train" / "b_label.tif") in err[0] and "(7, 7, 7): 4 px" in err[0]
    else:
        assert str(root / "test" / "c_dsm.tif") in err[0] and "modality 'dsm' has no data" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_clean_folder_trains_and_prints_the_label_histogram(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_palette_folder(tmp_path / "data")
    assert cli_main(["train", *smoke(tmp_path / "run"), *folder_flags(root)]) == 0
    out = capsys.readouterr().out
    assert "Training labels: 2 tiles, 32,768 px (0.0 % ignored): impervious_surfaces" in out
