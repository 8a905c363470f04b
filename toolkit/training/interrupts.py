"""Stopping a run from outside without losing work, and one run per output folder.

`StopRequest`: the first SIGTERM (a cluster's pre-emption notice, `kill`) or SIGINT (Ctrl-C) asks the loop to
finish the step it is in, write a checkpoint and exit with 128 + the signal's number, saying how to resume; a second
Ctrl-C stops at once (the last complete checkpoint is kept, as after any kill).

`RunLock`: a run holds an exclusive lock on `output_dir/.run.lock` (flock), so a second run on the same folder is
refused with a message naming the holder. The kernel drops the lock when its process dies, however it dies, so a
lock left by a killed run is never in the way (the file stays; the lock does not).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from toolkit.errors import UserError

LOCK_FILE = ".run.lock"


class StopRequest:
    """Catches SIGTERM and SIGINT while entered (main thread only; elsewhere it never fires)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT:  # asked twice: stop now
                raise KeyboardInterrupt
            return
        self.signum = signum
        # os.write, not print: a handler may run in the middle of another write to the same stream.
        with contextlib.suppress(OSError):  # stderr may be a pipe that the same Ctrl-C closed
            os.write(2, f"\n{self.name} received: finishing this step and writing a checkpoint, then exiting "
                        "(Ctrl-C again to stop at once)\n".encode())

    @property
    def name(self) -> str:
        """The signal's name, e.g. SIGTERM ('' before one came)."""
        return signal.Signals(self.signum).name if self.signum is not None else ""



class RunLock:
    """An exclusive lock on a run folder for as long as it is entered; `enabled=False` (other processes of a
    multi-process run) does nothing."""

    def __init__(self, folder: str | Path, *, enabled: bool = True) -> None:
        self.path, self.enabled, self._file = Path(folder) / LOCK_FILE, enabled, None

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")  # noqa: SIM115 (held open for the lock's life)
        except OSError as e:
            raise UserError(f"cannot write into the output folder {self.path.parent}: {e.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _holder(handle.read())
            handle.close()
            raise UserError(f"{self.path.parent} is in use by another run ({holder}): wait for it to finish, stop "
                            "it, or choose another --output_dir") from None
        except OSError as e:  # a file system without locks (some network mounts): run unlocked, say so
            print(f"warning: could not lock {self.path} ({e.strerror}); make sure no other run uses this folder")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock
            self._file = None


def _holder(text: str) -> str:
    """Who holds a lock, from what its holder wrote into the file."""
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (json.JSONDecodeError, KeyError, TypeError):
        return "a process that did not say who it is"


@contextlib.contextmanager
def one_run_per_folder(folder: str | Path) -> Iterator[None]:
    """Hold `folder`'s RunLock (on the main process) while the block runs; a refusal stops every process."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState()
    lock, error = RunLock(folder, enabled=state.is_main_process), None
    try:
        lock.__enter__()
    except UserError as e:
        error = str(e)
    if state.num_processes > 1:  # the others would otherwise wait for the main process at the first barrier
        error = broadcast_object_list([error])[0]
    if error:
        raise UserError(error)
    try:
        yield
    finally:
        lock.__exit__(None, None, None)
