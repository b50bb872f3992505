"""One file per run, written atomically, read without ever running code.

A checkpoint is a dict of plain types and tensors:
    {"format_version", "kind", "config", "model", "ema", "optimizer", "step", "rng", "history", ...}
It is written to a temporary file in the same folder and renamed over the old one, so a crash or
Ctrl-C in the middle of writing leaves the last good checkpoint in place. It is read with
``torch.load(weights_only=True)``, which refuses pickled code.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable, or not what the caller expected. The message names the file."""


def save_checkpoint(path, payload: dict) -> Path:
    """Write ``payload`` (plus the format version) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, **payload}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)  # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def load_checkpoint(path, kind: str | None = None, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    kind: when given, the checkpoint's "kind" must match (e.g. "toydiff.denoiser").
    Raises CheckpointError with the path and the problem for a missing, corrupt or foreign file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.is_dir():
        candidate = path / "checkpoint.pt"
        if candidate.exists():
            path = candidate
        else:
            raise CheckpointError(f"{path} is a folder without checkpoint.pt; pass the checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or not written by torch.save): {reason}") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path} was not written by this project (no format_version)")
    if payload["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload['format_version']}, this code reads version {FORMAT_VERSION}"
        )
    if kind is not None and payload.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {payload.get('kind')!r} checkpoint, expected {kind!r}")
    return payload
