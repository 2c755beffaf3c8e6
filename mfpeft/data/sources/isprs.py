"""The ISPRS benchmarks, Vaihingen and Potsdam, in the layouts of their official archives (docs/data.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from mfpeft.data.palette import ISPRS_CLASSES, ISPRS_PALETTE
from mfpeft.data.sources.paths import first_existing, optional_file, require_dir
from mfpeft.data.sources.registry import register_source
from mfpeft.data.sources.splits import Splits, check_nonempty, hold_out_validation, preset
from mfpeft.data.tile import LabelEncoding, Tile

_VAIHINGEN_ALL = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    20,
    21,
    22,
    23,
    24,
    26,
    27,
    28,
    29,
    30,
    31,
    32,
    33,
    34,
    35,
    37,
    38,
)
_VAIHINGEN_OFFICIAL_TRAIN = (1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37)
VAIHINGEN_SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "paper": {
        "train": tuple(str(n) for n in (1, 3, 23, 26, 7, 11, 13, 28, 17, 32, 34, 37)),
        "test": tuple(str(n) for n in (5, 21, 15, 30)),
    },
    "official": {
        "train": tuple(str(n) for n in _VAIHINGEN_OFFICIAL_TRAIN),
        "test": tuple(str(n) for n in _VAIHINGEN_ALL if n not in _VAIHINGEN_OFFICIAL_TRAIN),
    },
}
_POTSDAM_OFFICIAL_TRAIN = (
    "2_10",
    "2_11",
    "2_12",
    "3_10",
    "3_11",
    "3_12",
    "4_10",
    "4_11",
    "4_12",
    "5_10",
    "5_11",
    "5_12",
    "6_7",
    "6_8",
    "6_9",
    "6_10",
    "6_11",
    "6_12",
    "7_7",
    "7_8",
    "7_9",
    "7_10",
    "7_11",
    "7_12",
)
POTSDAM_SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "paper": {
        "train": (
            "6_10",
            "7_10",
            "2_12",
            "3_11",
            "2_10",
            "7_8",
            "5_10",
            "3_12",
            "5_12",
            "7_11",
            "7_9",
            "6_9",
            "7_7",
            "4_12",
            "6_8",
            "6_12",
            "6_7",
            "4_11",
        ),
        "test": ("4_10", "5_11", "2_11", "3_10", "6_11", "7_12"),
    },
    "official": {
        "train": _POTSDAM_OFFICIAL_TRAIN,
        "test": (
            "2_13",
            "2_14",
            "3_13",
            "3_14",
            "4_13",
            "4_14",
            "4_15",
            "5_13",
            "5_14",
            "5_15",
            "6_13",
            "6_14",
            "6_15",
            "7_13",
        ),
    },
}


# -- Vaihingen --
_VAIHINGEN_LABEL_DIRS = (
    "gts_for_participants",
    "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE",
    "ground_truth",
    "gts",
    "labels",
)
_VAIHINGEN_ERODED_DIRS = (
    "gts_eroded_for_participants",
    "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE",
    "ground_truth_eroded",
    "gts_eroded",
    "labels_eroded",
    "labels_noBoundary",
)


@register_source("vaihingen")
def vaihingen(
    data_dir: Path | None,
    *,
    split: str | Mapping[str, Sequence[str]] = "paper",
    validation: int | Sequence[str] | None = None,
) -> Splits:
    """ISPRS Vaihingen: ``top/``, ``dsm/``, a label folder and an eroded label folder (docs/data.md)."""
    root = require_dir(data_dir, "vaihingen")
    label_dirs = [root / d for d in _VAIHINGEN_LABEL_DIRS]
    eroded_dirs = [root / d for d in _VAIHINGEN_ERODED_DIRS]
    names = preset(VAIHINGEN_SPLITS, split, "vaihingen")

    def tile(area: str) -> Tile:
        name = f"area{area}"
        return Tile(
            name=name,
            modalities={
                "optical": first_existing([root / "top" / f"top_mosaic_09cm_area{area}.tif"], "IRRG image", name),
                "dsm": first_existing([root / "dsm" / f"dsm_09cm_matching_area{area}.tif"], "DSM", name),
            },
            labels=first_existing([d / f"top_mosaic_09cm_area{area}.tif" for d in label_dirs], "labels", name),
            eroded_labels=optional_file(d / f"top_mosaic_09cm_area{area}_noBoundary.tif" for d in eroded_dirs),
            label_encoding=LabelEncoding("palette", ISPRS_CLASSES, ISPRS_PALETTE),
        )

    splits = {k: [tile(a) for a in v] for k, v in names.items()}
    hold_out_validation(splits, validation, "area", "vaihingen")
    return check_nonempty(splits, "vaihingen", list(names))


# -- Potsdam --
@register_source("potsdam")
def potsdam(
    data_dir: Path | None,
    *,
    split: str | Mapping[str, Sequence[str]] = "paper",
    validation: int | Sequence[str] | None = None,
    optical_bands: Sequence[int] = (1, 2, 3),
) -> Splits:
    """ISPRS Potsdam: ``4_Ortho_RGBIR/``, ``1_DSM_normalisation/``, ``5_Labels_all/``,
    ``5_Labels_all_noBoundary/``. ``optical_bands`` picks from RGBIR (1-based; default R, G, B)."""
    root = require_dir(data_dir, "potsdam")
    names = preset(POTSDAM_SPLITS, split, "potsdam")

    def tile(tid: str) -> Tile:
        if not re.fullmatch(r"\d+_\d+", tid):
            raise ValueError(f"Potsdam tile ids look like '2_10', got {tid!r}")
        x, y = tid.split("_")
        ndsm = root / "1_DSM_normalisation"
        # The nDSM archive zero-pads both numbers (dsm_potsdam_02_10_...), the others do not.
        dsm_names = {
            f"dsm_potsdam_{int(x):02d}_{int(y):02d}_normalized_lastools.jpg",
            f"dsm_potsdam_{x}_{y}_normalized_lastools.jpg",
            f"dsm_potsdam_{int(x):02d}_{y}_normalized_lastools.jpg",
        }
        return Tile(
            name=tid,
            modalities={
                "optical": first_existing(
                    [root / "4_Ortho_RGBIR" / f"top_potsdam_{tid}_RGBIR.tif"], "RGBIR image", tid
                ),
                "dsm": first_existing(sorted(ndsm / n for n in dsm_names), "nDSM", tid),
            },
            labels=first_existing([root / "5_Labels_all" / f"top_potsdam_{tid}_label.tif"], "labels", tid),
            eroded_labels=optional_file([root / "5_Labels_all_noBoundary" / f"top_potsdam_{tid}_label_noBoundary.tif"]),
            label_encoding=LabelEncoding("palette", ISPRS_CLASSES, ISPRS_PALETTE),
            bands={"optical": tuple(int(b) for b in optical_bands)},
        )

    splits = {k: [tile(t) for t in v] for k, v in names.items()}
    hold_out_validation(splits, validation, "", "potsdam")
    return check_nonempty(splits, "potsdam", list(names))
