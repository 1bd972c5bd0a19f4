"""The parent side: runs each task in a fresh worker process, one at a time.

Workers are forked from a ``forkserver`` that imports torch, delayconv and the
worker module once, so a task starts in milliseconds rather than the seconds
an import of torch takes, and still has a process, and a heap, of its own.
Tasks run one after another: concurrent workers would compete for the cores
they are timed on.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

_context = None


def _pool_context():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["benchmarks._worker"])
    return _context


def run_task(task: dict, timeout_s: float) -> dict[str, Any]:
    """Runs ``task`` in a worker; returns its result, or why there is none.

    A worker that outlives ``timeout_s`` is killed (status ``timeout``); one
    that dies without answering, for instance killed by the kernel for want of
    memory, is reported ``failed`` with its exit code.
    """
    from . import _worker

    context = _pool_context()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_worker.child_main, args=(sender, task))
    process.start()
    sender.close()
    try:
        if receiver.poll(timeout_s):
            result = receiver.recv()
            process.join()
            return result
    except EOFError:
        pass
    finally:
        receiver.close()

    if process.is_alive():
        process.kill()
        process.join()
        return {"status": "timeout", "notes": [f"killed after {timeout_s:g} s"]}
    process.join()
    code = process.exitcode
    why = f"killed by signal {-code}" if code and code < 0 else f"exit code {code}"
    if code == -9:
        why += " (the kernel's out-of-memory killer, most likely)"
    return {"status": "failed", "notes": [f"the worker died without a result: {why}"]}
