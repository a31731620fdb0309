"""A bounded, crash-safe disk queue of line-protocol batches, used while InfluxDB refuses writes.

Layout: `<dir>/<seq>.seg` segment files of records, appended in order, and `<dir>/cursor` (the
segment and offset of the oldest record not yet written to InfluxDB). A record is

    length (u32, big-endian) | CRC-32 of the payload (u32) | payload

and each `append` is fsynced before it returns, so a batch is acknowledged to the broker only once
it is on disk. A crash can tear at most the last record of the last segment: on open every segment
is scanned and cut at the first record whose header or CRC does not check out.

The cursor is replaced atomically but not fsynced: after a crash it may lag, and then a batch
already written is written again — harmless, because InfluxDB writes are idempotent (DESIGN.md §4).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_SUFFIX = ".seg"
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024


class SpoolFullError(Exception):
    """Appending would exceed the spool's byte bound."""


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    size: int  # bytes of valid records
    records: int


class Spool:
    """Append-only segments with a read cursor; not thread-safe (one caller at a time)."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = max(1, min(segment_bytes, max_bytes))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segments: list[_Segment] = []
        self._read_offset = 0  # in the first segment
        self._read_records = 0  # records of the first segment already consumed
        self._writer: BinaryIO | None = None
        self._next_seq = 1
        self._recover()

    # ------------------------------------------------------------------ state
    @property
    def pending_bytes(self) -> int:
        """Bytes of records not yet popped (headers included)."""
        return sum(s.size for s in self._segments) - self._read_offset

    @property
    def pending_batches(self) -> int:
        return sum(s.records for s in self._segments) - self._read_records

    def __len__(self) -> int:
        return self.pending_batches

    @property
    def empty(self) -> bool:
        return self.pending_batches == 0

    def fits(self, n: int) -> bool:
        """Whether a payload of `n` bytes may be appended now (an empty spool takes any one record,
        so a batch larger than the bound cannot wedge the worker)."""
        return self.empty or self.pending_bytes + _HEADER.size + n <= self.max_bytes

    # ------------------------------------------------------------------ writing
    def append(self, payload: bytes) -> None:
        """Add a record and fsync it; raises SpoolFullError when it would exceed `max_bytes`."""
        if not self.fits(len(payload)):
            raise SpoolFullError(
                f"spool {self.directory} holds {self.pending_bytes} bytes; adding {len(payload)} would "
                f"exceed "
                f"{self.max_bytes} (INFRAWATCH_WORKER__SPOOL_MAX_BYTES)"
            )
        seg = self._segments[-1] if self._segments else None
        if seg is None or (seg.size > 0 and seg.size + _HEADER.size + len(payload) > self.segment_bytes):
            seg = self._new_segment()
        writer = self._open_writer(seg)
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        writer.write(record)
        writer.flush()
        os.fsync(writer.fileno())
        seg.size += len(record)
        seg.records += 1

    # ------------------------------------------------------------------ reading
    def peek(self) -> bytes | None:
        """The oldest pending record, or None when the spool is empty."""
        self._skip_finished()
        if not self._segments or self.empty:
            return None
        seg = self._segments[0]
        with seg.path.open("rb") as f:
            f.seek(self._read_offset)
            length, crc = _HEADER.unpack(f.read(_HEADER.size))
            payload = f.read(length)
        if len(payload) != length or zlib.crc32(payload) != crc:  # checked at open; the disk changed since
            raise OSError(f"spool record at {seg.path}:{self._read_offset} is corrupt")
        return payload

    def pop(self) -> None:
        """Mark the oldest pending record as written."""
        self._skip_finished()
        if self.empty:
            raise IndexError("pop from an empty spool")
        seg = self._segments[0]
        with seg.path.open("rb") as f:
            f.seek(self._read_offset)
            length, _ = _HEADER.unpack(f.read(_HEADER.size))
        self._read_offset += _HEADER.size + length
        self._read_records += 1
        if self.empty:
            self._reset()
        else:
            self._skip_finished()
            self._save_cursor()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------------ internals
    def _new_segment(self) -> _Segment:
        seq = self._next_seq
        self._next_seq += 1
        path = self.directory / f"{seq:012d}{_SUFFIX}"
        path.touch()
        _fsync_dir(self.directory)
        seg = _Segment(seq, path, 0, 0)
        self._segments.append(seg)
        return seg

    def _open_writer(self, seg: _Segment) -> BinaryIO:
        if self._writer is not None and self._writer.name != str(seg.path):
            self._writer.close()
            self._writer = None
        if self._writer is None:
            self._writer = seg.path.open("ab")
        return self._writer

    def _skip_finished(self) -> None:
        """Drop fully read segments other than the one being appended to."""
        while len(self._segments) > 1 and self._read_offset >= self._segments[0].size:
            done = self._segments.pop(0)
            done.path.unlink(missing_ok=True)
            self._read_offset = 0
            self._read_records = 0

    def _reset(self) -> None:
        """Everything written: remove the segments so the spool directory does not grow."""
        self.close()
        for seg in self._segments:
            seg.path.unlink(missing_ok=True)
        self._segments = []
        self._read_offset = 0
        self._read_records = 0
        # the cursor names the next segment to be made: numbering only grows, and on reopen every
        # segment older than the cursor is known to be written
        self._save_cursor(seq=self._next_seq, offset=0)

    def _save_cursor(self, seq: int | None = None, offset: int | None = None) -> None:
        if seq is None:
            seq = self._segments[0].seq if self._segments else 0
        if offset is None:
            offset = self._read_offset
        tmp = self.directory / "cursor.tmp"
        tmp.write_text(f"{seq} {offset}\n")
        os.replace(tmp, self.directory / "cursor")

    def _load_cursor(self) -> tuple[int, int]:
        try:
            seq_text, offset_text = (self.directory / "cursor").read_text().split()
            return int(seq_text), int(offset_text)
        except (OSError, ValueError):
            return 0, 0

    def _recover(self) -> None:
        cursor_seq, cursor_offset = self._load_cursor()
        paths = sorted(p for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())
        self._next_seq = max([cursor_seq, *(int(p.stem) + 1 for p in paths)], default=1) or 1
        for path in paths:
            seq = int(path.stem)
            if seq < cursor_seq:
                path.unlink()  # fully written before the last run stopped
                continue
            offsets = _scan(path)
            if seq == cursor_seq:
                if cursor_offset in offsets:
                    self._read_offset = cursor_offset
                    self._read_records = offsets.index(cursor_offset)
                else:
                    # a cursor off a record boundary cannot be trusted: send the segment again
                    log.warning(
                        "spool cursor %s:%d is not at a record; re-sending the segment", path, cursor_offset
                    )
            self._segments.append(_Segment(seq, path, offsets[-1], len(offsets) - 1))
        if self.empty:
            self._reset()
        elif self.pending_batches:
            log.info(
                "spool %s: %d batches (%d bytes) pending",
                self.directory,
                self.pending_batches,
                self.pending_bytes,
            )


def _scan(path: Path) -> list[int]:
    """Record start offsets of a segment, plus its valid end; a torn or corrupt tail is cut off."""
    offsets = [0]
    with path.open("r+b") as f:
        data = f.read()
        pos = 0
        while pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + length
            if end > len(data) or zlib.crc32(data[pos + _HEADER.size : end]) != crc:
                break
            pos = end
            offsets.append(pos)
        if pos != len(data):
            log.warning(
                "spool segment %s: dropping a torn record (%d bytes) at offset %d", path, len(data) - pos, pos
            )
            f.truncate(pos)
            f.flush()
            os.fsync(f.fileno())
    return offsets


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
