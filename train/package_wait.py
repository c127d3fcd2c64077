"""Waiting for train/package-run.js to finish (it writes RUN.done last), for train/evaluate.py:
the wait ends with an error when the run's process ends without finishing, or when it takes too
long, instead of polling forever. Standard library only, so it is tested without PyTorch."""
import os
import time


def alive(pid):
    """Whether process `pid` is still running. One that has exited but that its parent has not yet
    reaped (a zombie: run.sh's background job until `wait`) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state not in ("Z", "X")


def wait_for_package(path, pid=None, timeout=None, poll=5.0):
    """Returns once `path + ".done"` exists. Raises RuntimeError when process `pid` has ended
    without writing it, or when `timeout` seconds pass first."""
    done = path + ".done"
    start = time.monotonic()
    while not os.path.exists(done):
        if pid is not None and not alive(pid):
            if os.path.exists(done):  # written just before it exited
                break
            raise RuntimeError(f"the package's run (train/package-run.js, pid {pid}) ended without writing {done}: its error is above; fix it and run again")
        if timeout is not None and time.monotonic() - start >= timeout:
            raise RuntimeError(f"{done} did not appear within {timeout:g} s: is train/package-run.js still running? (give --package-pid, or a longer --package-timeout)")
        time.sleep(poll)
