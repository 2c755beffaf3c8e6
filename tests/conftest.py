"""Shared fixtures."""

from __future__ import annotations

import pytest
from transformers import SamVisionModel

import mfpeft  # noqa: F401  (registers the tuners with peft)
from tests.sam_fixtures import make_tiny_sam


@pytest.fixture
def tiny_sam() -> SamVisionModel:
    return make_tiny_sam(seed=0)


@pytest.fixture
def hub_uploads(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Intercept Hub uploads (no network): returns {path in repo: bytes} of every file committed."""
    from pathlib import Path

    import huggingface_hub

    uploaded: dict[str, bytes] = {}

    def fake_create_commit(self, repo_id, operations, **kwargs):  # type: ignore[no-untyped-def]
        for op in operations:
            source = op.path_or_fileobj
            uploaded[op.path_in_repo] = Path(source).read_bytes() if isinstance(source, (str, Path)) else source
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/0",
            commit_message="",
            commit_description="",
            oid="0" * 40,
        )

    def fake_create_repo(self, repo_id=None, *args, **kwargs):  # type: ignore[no-untyped-def]
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", fake_create_commit)
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    return uploaded
