"""The shared-memory area where one worker's metric values live.

The supervisor makes one anonymous memory file (memfd) per worker before
forking it and keeps its descriptor: the worker maps it and writes each
value with a plain memory store (no syscall per increment), and whatever it
wrote is still there for the supervisor to read after the worker is gone,
SIGKILL included. Nothing touches the disk; the memory is freed when the
supervisor closes the descriptor of a reaped worker.

Layout (little-endian, every value 8-byte aligned):

    u64 used bytes (header, written last when an entry is added)
    entries: u32 key length, key (UTF-8 JSON), zero padding to 8,
             f64 value, f64 timestamp

An entry is complete before ``used`` covers it, so a reader never sees a
half-written key; a value is one aligned 8-byte store, so it is never torn.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from typing import Any

CAPACITY = 32 << 20  # sparse: only the pages written count, a few KiB for most apps
HEADER = struct.Struct("<Q")
KEY_LENGTH = struct.Struct("<I")
VALUE = struct.Struct("<dd")


class AreaFull(Exception):
    """No room for one more series in this worker's area."""


def create() -> int:
    """A new, empty area (in the supervisor, before fork); its descriptor."""
    fd = os.memfd_create("supervisor-metrics", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, CAPACITY)
        os.pwrite(fd, HEADER.pack(HEADER.size), 0)
    except OSError:
        os.close(fd)
        raise
    return fd


def snapshot(fd: int) -> bytes:
    """The used part of an area, as it is now (two pread calls)."""
    head = os.pread(fd, HEADER.size, 0)
    if len(head) < HEADER.size:
        return b""
    used = min(HEADER.unpack(head)[0], CAPACITY)
    return os.pread(fd, used, 0)


def read(fd: int) -> list[tuple[bytes, float, float]]:
    """Every (key, value, timestamp) in an area."""
    data = snapshot(fd)
    cells = values_of(data)
    return [(key, cells[cell], cells[cell + 1]) for key, cell in keys(data, HEADER.size)[0]]


def values_of(data: bytes) -> Any:
    """An area's bytes as doubles: the key at cell ``i`` has its value at [i], stamp at [i+1]."""
    return memoryview(data)[: len(data) & ~7].cast("d")


def keys(data: bytes, pos: int) -> tuple[list[tuple[bytes, int]], int]:
    """The (key, cell index) of every entry from offset ``pos``, and where they end.

    Entries never move, so a reader parses each one once and then only reads values.
    """
    found: list[tuple[bytes, int]] = []
    used = len(data)
    while pos + KEY_LENGTH.size <= used:
        (length,) = KEY_LENGTH.unpack_from(data, pos)
        start = pos + KEY_LENGTH.size
        cell = _align(start + length)
        if cell + VALUE.size > used:
            break  # cannot happen with the header written last; never read past it
        found.append((data[start : start + length], cell // 8))
        pos = cell + VALUE.size
    return found, pos


def _align(offset: int) -> int:
    return (offset + 7) & ~7


class Area:
    """The worker's side: the mapping, and where each series' value lives."""

    def __init__(self, fd: int) -> None:
        self.map = mmap.mmap(fd, CAPACITY, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        # Values are written through a view of doubles: one store per update.
        # (typed Any: typeshed's memoryview takes only ints, whatever the format)
        self.cells: Any = memoryview(self.map).cast("d")
        self.used: int = HEADER.unpack_from(self.map, 0)[0]
        self.slots: dict[bytes, int] = {}
        self.lock = threading.Lock()

    def slot(self, key: bytes) -> int:
        """The index in :attr:`cells` of this key's value (the timestamp is the next)."""
        with self.lock:
            index = self.slots.get(key)
            if index is not None:
                return index
            start = self.used + KEY_LENGTH.size
            cell = _align(start + len(key))
            end = cell + VALUE.size
            if end > CAPACITY:
                raise AreaFull(f"the metrics area is full ({CAPACITY} bytes)")
            KEY_LENGTH.pack_into(self.map, self.used, len(key))
            self.map[start : start + len(key)] = key
            VALUE.pack_into(self.map, cell, 0.0, 0.0)
            HEADER.pack_into(self.map, 0, end)  # last: the entry is complete now
            self.used = end
            index = self.slots[key] = cell // 8
            return index
