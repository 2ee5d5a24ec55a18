"""Checkpoint files: written atomically, one per finished epoch, read back for resume; and
``SearchCheckpoints``, one search's files together with their rows in the database."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from errors import ConfigError
from storage.fencing import Fence
from storage.searches import CheckpointRecord, SearchStore

log = logging.getLogger(__name__)

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


class SearchCheckpoints:
    """The checkpoints of one search: files in ``root/search_id``, a row each in ``store``
    (every write under ``fence``, the driver's lease), and the controller's restart state."""

    def __init__(
        self, store: SearchStore, search_id: str, root: Path, fence: Fence | None = None
    ) -> None:
        self.store, self.search_id, self.fence = store, search_id, fence
        self.folder = Path(root) / search_id
        self._root = Path(root)

    @property
    def controller_state(self) -> Path:
        """Where the controller actor keeps its state between Ray's restarts of it."""
        return self.folder / "controller.pt"

    def check_writable(self) -> None:
        """Raises ``ConfigError`` (naming the folder) where no checkpoint could be written."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / ".writable"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise ConfigError(
                f"cannot write checkpoints to {str(self.folder)!r}: {e.strerror}; "
                "choose another --checkpoint-dir"
            ) from None

    def newest_readable(self) -> tuple[CheckpointRecord | None, dict[str, Any]]:
        """The newest checkpoint whose file reads, and its payload; a torn or lost newer one
        is forgotten (its rows rewound), so the search goes on from the one before instead of
        never resuming. ``(None, {})`` when none reads."""
        for checkpoint in self.store.checkpoints(self.search_id)[::-1]:
            try:
                return checkpoint, load_checkpoint(checkpoint.path)
            except ConfigError as e:
                log.warning("%s; falling back to the checkpoint before it", e)
                self.store.rewind(self.search_id, checkpoint.epoch - 1, fence=self.fence)
        return None, {}

    def save(self, epoch: int, payload: dict[str, Any], *, keep: int) -> None:
        """Write epoch ``epoch``'s file, then its row; then keep only the newest ``keep``."""
        path = checkpoint_path(self._root, self.search_id, epoch)
        if self.fence is not None:
            # A file of each lease's own: a driver still saving after it lost its lease never
            # replaces the file that the new driver's row names.
            path = path.with_name(f"{path.stem}-attempt{self.fence.attempt}{path.suffix}")
        size = save_checkpoint(path, payload)
        self.store.add_checkpoint(
            self.search_id,
            CheckpointRecord(epoch=epoch, path=str(path.resolve()), bytes=size),
            fence=self.fence,
        )
        self.prune(keep)

    def prune(self, keep: int) -> None:
        """Keep the newest ``keep`` checkpoints: rows first (fenced), then their files."""
        for old in self.store.prune_checkpoints(self.search_id, keep=keep, fence=self.fence):
            try:
                Path(old).unlink(missing_ok=True)
            except OSError as e:
                log.warning("could not delete checkpoint %s: %s", old, e.strerror)

    def forget(self) -> None:
        """Every checkpoint and the controller's restart state, and their folder once it is
        empty: a search that succeeded is never resumed."""
        self.prune(0)
        self.controller_state.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (a file of the user's), or gone
            self.folder.rmdir()
