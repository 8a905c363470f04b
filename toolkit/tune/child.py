"""`python -m toolkit.tune.child MODULE ARGS...`: run MODULE as `python -m MODULE ARGS...`, but die with the tuner.

A trial is a process of its own; if the tuner is killed (SIGKILL, a preempted node), its trials must not run on
unseen and write into run folders that the resumed study will continue. On Linux the child asks the kernel for
SIGKILL when its parent goes (prctl PR_SET_PDEATHSIG), then checks that the parent did not go before it asked.
The kernel ties the request to the thread that started the child: the tuner starts trials from Optuna's worker
threads, which live until the study stops, and every trial ends before its thread does.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1
PARENT_ENV = "TOOLKIT_TUNE_PARENT"


def die_with_parent() -> None:
    """SIGKILL this process when the tuner dies (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        print(f"warning: prctl failed (errno {ctypes.get_errno()}): this trial would outlive a killed tuner",
              file=sys.stderr)
    if os.environ.get(PARENT_ENV) and os.getppid() != int(os.environ[PARENT_ENV]):
        os._exit(1)  # the tuner died before the request: nobody waits for this trial


def main() -> None:
    """Run the module named by the first argument with the rest as its arguments."""
    die_with_parent()
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
