"""Run `scalelab validate` (and `plan` where asked) in-process over hostile sweep files, in one
child process, and print per file: exit code, wall seconds, what it wrote to stderr. The test
(test_hostile_sweep_files.py) reads the JSON; the child's peak memory comes from getrusage."""
import contextlib
import io
import json
import resource
import sys
import time
import traceback

from orchestrator.cli import main

results = []
for path, command in json.loads(sys.stdin.read()):
    err = io.StringIO()
    start = time.monotonic()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([command, path])
        except SystemExit as exit_:
            code = exit_.code
        except BaseException:  # noqa: BLE001 - the test reports it as the traceback it is
            traceback.print_exc(file=err)
            code = "raised"
    results.append({"path": path, "command": command, "code": code, "seconds": time.monotonic() - start,
                    "stderr": err.getvalue()})



def peak_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage: Linux carries ru_maxrss over
    exec, so a child of a large pytest process would report the parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


print(json.dumps({"results": results, "max_rss_mb": peak_mb()}))
