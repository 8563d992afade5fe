"""The supervisor reads RSS from /proc itself; it must be psutil's number."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from supervisor.system import memory


def test_rss_is_psutils_rss() -> None:
    # Wait for the child to say it runs: right after fork/exec its /proc
    # entry can still describe the half-built process (statm says one page).
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print(flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"\n"
        ours, theirs = memory.rss(child.pid), psutil.Process(child.pid).memory_info().rss
        assert ours is not None and abs(ours - theirs) <= 64 * 1024
    finally:
        child.kill()
        child.wait(5)
        if child.stdout is not None:
            child.stdout.close()


def test_a_gone_process_has_no_rss() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    assert memory.rss(child.pid) is None
    assert (memory.rss(os.getpid()) or 0) > 1024 * 1024


def test_resident_reads_a_kept_descriptor_that_follows_the_process() -> None:
    grow = "import sys, time; print(flush=True); sys.stdin.readline(); x = b'x' * (64 << 20)"
    child = subprocess.Popen(
        [sys.executable, "-c", grow + "; print(flush=True); time.sleep(30)"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    resident = memory.Resident()
    try:
        assert child.stdin is not None and child.stdout is not None
        assert child.stdout.readline() == b"\n"
        before = resident.of(child.pid)
        open_fds = len(os.listdir("/proc/self/fd"))
        child.stdin.write(b"\n")
        child.stdin.flush()
        assert child.stdout.readline() == b"\n"
        after = resident.of(child.pid)
        assert before is not None and after is not None and after - before >= 60 << 20
        assert len(os.listdir("/proc/self/fd")) == open_fds, "the same descriptor, read again"
    finally:
        child.kill()
        child.wait(5)
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    assert resident.of(child.pid) is None  # reaped: the descriptor answers no more
    fds = len(os.listdir("/proc/self/fd"))
    resident.keep_only(set())
    assert len(os.listdir("/proc/self/fd")) == fds, "closed when the read failed"
