"""Ending the lab's commands cleanly on SIGINT, SIGTERM and SIGHUP, and with their parent.

:func:`run_until_stopped` runs a coroutine on a new event loop and turns the first of those
signals into a cancellation of it, so that every ``async with`` and ``finally`` inside runs
(servers stopped, folders removed) before :class:`Stopped` says which signal it was. A
second signal leaves at once: the :mod:`~gelu_lab.sandbox.janitor` cleans up then.

Kopf takes SIGINT and SIGTERM for itself when it starts in the main thread, and then only
the operator would stop; :func:`reclaim_signals`, which the sandbox calls once the operator
runs, gives them back.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

T = TypeVar("T")

STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG: Final = 1  # from <linux/prctl.h>

# The handler of the loop that run_until_stopped runs, by loop.
_handlers: dict[asyncio.AbstractEventLoop, Callable[[signal.Signals], None]] = {}


class Stopped(Exception):  # noqa: N818 (it is not an error: a signal asked for it)
    """The run was stopped by a signal, after it cleaned up."""

    def __init__(self, signum: signal.Signals) -> None:
        super().__init__(f"stopped by {signum.name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """What a shell reports for a process ended by the signal: 128 + its number."""
        return 128 + int(self.signum)


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when its parent ends (Linux), so that a
    parent killed outright (``make`` by SIGKILL, say) does not leave it running."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before the request took effect
        os.kill(os.getpid(), sig)


def run_until_stopped(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on a new event loop; on SIGINT, SIGTERM or SIGHUP, cancel it and raise
    :class:`Stopped` once it has finished cleaning up."""
    received: list[signal.Signals] = []
    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        task = loop.create_task(main)

        def on_signal(signum: signal.Signals) -> None:
            received.append(signum)
            if len(received) == 1:
                task.cancel()
            else:  # asked twice: leave now, the janitor removes what is left
                os._exit(128 + int(signum))

        _handlers[loop] = on_signal
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if received:
                raise Stopped(received[0]) from None
            raise
        finally:
            del _handlers[loop]
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)


def reclaim_signals() -> None:
    """Undo Kopf's claim on SIGINT and SIGTERM in this thread's running loop: give them back
    to :func:`run_until_stopped` if it runs this loop, else restore Python's defaults (a
    KeyboardInterrupt, the end of the process), so that a signal stops the whole program,
    not only its operator."""
    if threading.current_thread() is not threading.main_thread():
        return  # Kopf installs no handlers outside the main thread
    loop = asyncio.get_running_loop()
    handler = _handlers.get(loop)
    for signum in (signal.SIGINT, signal.SIGTERM):
        if handler is not None:
            loop.add_signal_handler(signum, handler, signum)
        else:
            loop.remove_signal_handler(signum)
