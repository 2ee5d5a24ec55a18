"""Reading a search's driver log for the page: a byte range of ``logs/<id>.log``, bounded.

The log is what the driver printed (progress lines per epoch, recoveries, errors). What a
client gets is text from a byte offset on, at most ``MAX_CHUNK`` bytes a call, starting at a
line boundary, with the data folder's path replaced by ``$SEGNAS_DATA_DIR`` (a log line must
not tell a client where the server keeps its files).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

MAX_CHUNK = 64 * 1024
DATA_DIR_MARK = "$SEGNAS_DATA_DIR"


class LogChunk(BaseModel):
    text: str = Field(description="the log from `offset` on (whole lines), at most 64 KiB")
    offset: int = Field(description="the byte offset this text starts at")
    next: int = Field(description="the offset to ask for next (the end of this text)")
    size: int = Field(description="the log's size in bytes now")
    exists: bool = Field(
        description="false while the driver has written nothing here (or runs on a cluster, "
        "whose drivers log to Ray's job logs)"
    )


def read_log(path: Path, offset: int | None, data_dir: Path) -> LogChunk:
    """The chunk of ``path`` from ``offset`` (None: the last ``MAX_CHUNK`` bytes)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            start = max(0, size - MAX_CHUNK) if offset is None else min(offset, size)
            f.seek(start)
            raw = f.read(MAX_CHUNK)
    except FileNotFoundError:
        return LogChunk(text="", offset=0, next=0, size=0, exists=False)
    if start > 0 and offset is None:  # a tail starts at the first whole line
        cut = raw.find(b"\n")
        raw, start = (raw[cut + 1 :], start + cut + 1) if cut >= 0 else (b"", start + len(raw))
    if start + len(raw) < size:  # a chunk ends at the last whole line, if it has one
        cut = raw.rfind(b"\n")
        if cut >= 0:
            raw = raw[: cut + 1]
    text = raw.decode("utf-8", errors="replace")
    for form in {str(data_dir), str(data_dir.resolve())}:
        text = text.replace(form, DATA_DIR_MARK)
    return LogChunk(text=text, offset=start, next=start + len(raw), size=size, exists=True)
