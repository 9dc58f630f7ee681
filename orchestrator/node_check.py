"""Before a sweep trains on a Ray cluster of several nodes (`scalelab run --address`, which is
what `scalelab submit` runs): can every node run its trials? A trial may run on any node, and
an interrupted one resumes on whichever node is free, so every node must

- see the sweep's storage (`--storage`: checkpoints and journals) as the same folder: a
  shared filesystem. The driver writes a marker file there; each node must read it back;
- run the same Python (major.minor) as the driver and import scalelab's code and torch (the
  job brings the code; torch and the other dependencies must be installed on each node).

Each alive node runs one small task pinned to it (no CPU reserved, so busy nodes answer too).
A node that fails stops the run before anything trains, with one line per problem.
"""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

from trainer.config import UserError

STORAGE_MARKER = ".scalelab-node-check-"   # + a random id; removed after the check
ANSWER_S = 300.0  # a node's first task starts a worker process and may set up the job's environment


def node_report(marker: str | None, token: str) -> dict:
    """What one node says about itself (run there as a Ray task)."""
    import platform

    report = {"python": platform.python_version(), "torch": None, "import_error": None,
              "sees_storage": None, "pid": os.getpid()}
    try:
        import torch

        import trainer.loop  # noqa: F401 - scalelab's trainer and its dependencies

        report["torch"] = torch.__version__
    except Exception as err:  # noqa: BLE001 - reported, not raised: the driver names the node
        report["import_error"] = f"{type(err).__name__}: {err}"
    if marker is not None:
        try:
            report["sees_storage"] = Path(marker).read_text(encoding="utf-8") == token
        except OSError:
            report["sees_storage"] = False
    return report


def node_problems(driver: dict, reports: dict[str, dict | str], storage: str) -> list[str]:
    """One line per problem; `reports`: node name -> its report, or why it gave none."""
    problems = []
    for node, report in reports.items():
        if isinstance(report, str):
            problems.append(f"node {node}: {report}")
            continue
        if report["import_error"]:
            problems.append(f"node {node} cannot import scalelab's trainer ({report['import_error']}): "
                            "install the project's dependencies there (pip install -e . or the same virtualenv)")
        if report["python"].rsplit(".", 1)[0] != driver["python"].rsplit(".", 1)[0]:
            problems.append(f"node {node} runs Python {report['python']}, the driver {driver['python']}: "
                            "start every node from the same environment")
        elif report["torch"] and driver["torch"] and report["torch"] != driver["torch"]:
            problems.append(f"node {node} has torch {report['torch']}, the driver {driver['torch']}: a checkpoint "
                            "written on one may not load on the other; install the same version")
        if report["sees_storage"] is False:
            problems.append(f"node {node} does not see the storage {storage} (a file written there by the driver is "
                            "not there): pass --storage on a filesystem every node mounts at the same path")
    return problems


def check_nodes(storage: str, sweep: str, out=sys.stdout) -> None:
    """On a cluster of two or more alive nodes, refuse to start unless every node passes (see
    the module's text); on one node, do nothing."""
    import ray  # connected already: the run's ray_session

    nodes = {f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})": n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    if len(nodes) < 2:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    marker = Path(storage) / (STORAGE_MARKER + token[:12])
    marker.write_text(token, encoding="utf-8")
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(node_report)
        refs = {name: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
                .remote(str(marker), token) for name, node_id in nodes.items()}
        reports: dict[str, dict | str] = {}
        for name, ref in refs.items():
            try:
                reports[name] = ray.get(ref, timeout=ANSWER_S)
            except ray.exceptions.GetTimeoutError:
                reports[name] = f"did not answer within {ANSWER_S:.0f} s (is its raylet healthy? `ray status`)"
            except Exception as err:  # noqa: BLE001 - e.g. the code could not be unpickled there
                reports[name] = f"could not run scalelab's check ({type(err).__name__}: {str(err).splitlines()[0]})"
    finally:
        marker.unlink(missing_ok=True)
    problems = node_problems(node_report(None, token), reports, storage)
    if problems:
        raise UserError(f"the Ray cluster's {len(nodes)} nodes cannot all run this sweep's trials:\n  "
                        + "\n  ".join(problems))
    first = next(r for r in reports.values() if isinstance(r, dict))
    print(f"[{sweep}] {len(nodes)} nodes: each sees the storage {storage} and runs Python {first['python']}, "
          f"torch {first['torch']}", file=out, flush=True)
