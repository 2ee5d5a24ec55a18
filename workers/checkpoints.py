"""Checkpoint files: written atomically, one per finished epoch, read back for resume."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from errors import ConfigError

FORMAT = 1


def checkpoint_path(root: Path, search_id: str, epoch: int) -> Path:
    return root / search_id / f"epoch-{epoch:05d}.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> int:
    """Write ``payload`` so that ``path`` is either the old file or the complete new one, never
    a torn write; returns the file's size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename itself must reach the disk before the database row that points at the file.
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return path.stat().st_size


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``.

    Raises:
        ConfigError: the file is missing, unreadable or of another format.
    """
    path = Path(path)
    try:
        # weights_only: tensors, numbers, strings and containers (weights, optimizer states,
        # RNG states all are); a tampered file with pickled code is refused, not run.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"checkpoint {str(path)!r} is gone: the search cannot resume") from None
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"checkpoint {str(path)!r} cannot be read: {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"checkpoint {str(path)!r} is not a segnas checkpoint (format {FORMAT})")
    return payload
