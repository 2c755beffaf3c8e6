"""Guards that keep the structure of docs/architecture.md: short functions, working facades, one of each concept."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import mfpeft

PACKAGE = Path(mfpeft.__file__).parent
MAX_LINES = 60


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_function_longer_than_60_lines() -> None:
    """ruff's PLR0915 counts statements; this counts lines, def to last line (docstring included)."""
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def _packages() -> list[str]:
    names = ["mfpeft"]
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="mfpeft."):
        if info.ispkg:
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _packages())
def test_every_facade_resolves_what_it_lists(name: str) -> None:
    """Each package lists its public names in ``__all__`` and each resolves (the facade rule of every __init__)."""
    package = importlib.import_module(name)
    listed = getattr(package, "__all__", None)
    assert listed, f"{name}/__init__.py lists no public names"
    for public in listed:
        assert getattr(package, public) is not None, f"{name}.{public}"
    with pytest.raises(AttributeError, match="no_such_name"):
        package.no_such_name  # noqa: B018


def test_top_level_facade_lists_the_public_api() -> None:
    for public in (
        "MFNetForSegmentation",
        "MMLoraConfig",
        "train",
        "TrainingArguments",
        "evaluate_model",
        "predict_scene",
        "get_source",
    ):
        assert public in mfpeft.__all__
        assert callable(getattr(mfpeft, public))


def _grep(pattern: str, allowed: set[str]) -> list[str]:
    """Lines of mfpeft matching ``pattern`` outside the ``allowed`` files (relative to mfpeft/)."""
    found = []
    regex = re.compile(pattern)
    for path in _sources():
        relative = str(path.relative_to(PACKAGE))
        if relative in allowed:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if regex.search(line) and not line.lstrip().startswith("#"):
                found.append(f"{relative}:{number}: {line.strip()}")
    return found


def test_one_atomic_writer() -> None:
    """Temporary-and-rename lives in common/files.py only."""
    assert not _grep(r"os\.replace\(|tempfile\.mk[sd]temp|\.rename\(", {"common/files.py"})


def test_one_ignore_index() -> None:
    """255 as the ignore class is IGNORE_INDEX, defined once."""
    assert not _grep(r"(ignore_index|IGNORE_INDEX|NODATA)\w*(: [^=]+)? = 255\b", {"common/classes.py"})


def test_one_colouriser() -> None:
    """The class-id -> colour lookup table is built in common/classes.py only."""
    assert not _grep(r"np\.zeros\(\(256, [34]\)", {"common/classes.py"})


def test_one_chip_padder() -> None:
    """A chip short of the model size is padded by data/raster.py:pad_chip only (the decoder pads feature maps,
    the demo pads its label map for smoothing: neither is a chip)."""
    assert not _grep(r"np\.pad\(|F\.pad\(", {"data/raster.py", "models/decoder.py", "data/demo.py"})


def test_one_encoder_finder() -> None:
    """Searching a model's modules for its SAM encoder is tuners/base.py:find_vision_encoder only."""
    found = []
    for path in _sources():
        relative = str(path.relative_to(PACKAGE))
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            loops = re.search(r"for \w+ in .*\.(named_)?modules\(\)", line) and relative != "tuners/base.py"
            if loops and any("SamVisionEncoder" in after for after in lines[number + 1 : number + 3]):
                found.append(f"{relative}:{number + 1}: {line.strip()}")
    assert not found
