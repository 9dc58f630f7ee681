"""`scalelab plan`: what a sweep would run — per trial cost from `trainer.estimate`, which
trials are already done in MLflow (the sweep mode says what is owed, as for `scalelab run`),
and totals. Pure data here; printing is in plan_cli."""
from __future__ import annotations

from typing import Any, Callable

from trainer.pack_rules import pack_key

from .locations import Locations
from .spec import SweepSpec
from .fuse import fusion_asked
from .sweep_modes import sweep_mode
from .trial import Trial, trial_cost, workers_of
from .uri_auth import redact


def trial_row(trial: Trial, done: dict[str, str]) -> dict[str, Any]:
    est = trial_cost(trial)
    return {
        "label": trial.label,
        "hash": trial.hash,
        "overrides": trial.overrides,
        "n_params": int(est["n_params"]),
        "tokens": int(est["tokens"]),
        "flops": float(est["flops"]),
        "memory_bytes": int(est["memory_bytes"]),
        "cpu": trial.resources["cpu"],
        "gpu": trial.resources["gpu"],
        "workers": workers_of(trial.resources),  # memory_bytes is one worker's, seconds the wall time on all
        "seconds": float(est["seconds"]),
        "done": done.get(trial.hash),  # "finished" | "diverged" | None
    }


def build_plan(spec: SweepSpec, where: Locations, done: dict[str, str],
               measure: Callable[[list, float], float] | None = None, own_runs: list = (),
               fuse: int | str | None = None) -> dict[str, Any]:
    """The whole plan as plain data (what `plan --json` prints). `done`: {hash: outcome} of the
    experiment's results; `own_runs`: the sweep's own trial runs (tracking_query.sweep_runs);
    the sweep mode decides from both what is owed, exactly as `scalelab run` does.
    `measure(configs)` gives a CPU pack's speed-up over its members one at a time on `cpus`
    CPUs (None: not measured). `fuse`: the --fuse flag (None: the sweep file's)."""
    mode = sweep_mode(spec, where.study_url, fuse)
    mode.owe(done, list(own_runs))
    plan: dict[str, Any] = {
        "sweep": spec.name, "file": spec.source, "experiment": spec.experiment,
        # what `plan` prints, as text or JSON: database URIs without their credentials
        "tracking_uri": redact(where.tracking_uri), "storage": where.storage, "mode": spec.mode,
        "concurrency": spec.concurrency, "retries": spec.retries, "seeds": spec.seeds,
        "from_study": spec.from_study and {**spec.from_study, "storage": redact(spec.from_study.get("storage"))},
        "fuse": mode.fuse, "workers": spec.workers, "placement": spec.placement,
    }
    if spec.mode == "grid":
        rows = [trial_row(t, mode.done_before) for t in mode.trials]
        plan["trials"] = rows
        plan["totals"] = _totals(rows, spec.concurrency)
        plan["packs"], plan["alone"] = pack_rows(mode, measure)
    else:
        plan.update(_search_plan(spec, where.study_url, mode))
    return plan


def pack_rows(mode, measure: Callable[[list, float], float] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The fused packs `run` would form from the trials still to run (packing.py), and the
    trials that run alone for a reason (e.g. Muon). A CPU pack's speed-up is measured once
    per shape and size."""
    number = {t.hash: i for i, t in enumerate(mode.trials, 1)}
    speedups: dict[tuple, float | None] = {}
    rows, alone = [], []
    for pack in mode.form_packs():
        if not pack.fused:
            if pack.note:
                alone.append({"trial": number[pack.hash], "hash": pack.hash, "note": pack.note})
            continue
        on_gpu = pack.resources["gpu"] > 0
        key = (pack_key(pack.members[0].config), len(pack.members))
        if key not in speedups:
            speedups[key] = (measure([t.config for t in pack.members], pack.resources["cpu"])
                             if measure and not on_gpu else None)
        rows.append({"id": pack.hash, "k": len(pack.members), "trials": [number[t.hash] for t in pack.members],
                     "hashes": [t.hash for t in pack.members], "memory_bytes": int(pack.memory_bytes),
                     "cpu": pack.resources["cpu"], "gpu": pack.resources["gpu"], "speedup": speedups[key],
                     "speedup_measured_on": None if on_gpu or not measure else "this machine's CPU"})
    return rows, alone


def _totals(rows: list[dict[str, Any]], concurrency: int | None) -> dict[str, Any]:
    todo = [r for r in rows if not r["done"]]
    seconds = sum(r["seconds"] for r in todo)
    return {
        "trials": len(rows), "done": len(rows) - len(todo), "to_run": len(todo),
        "flops_to_run": sum(r["flops"] for r in todo),
        "tokens_to_run": sum(r["tokens"] for r in todo),
        "seconds_to_run": seconds,  # compute time, one trial after another
        "wall_seconds_at_concurrency": seconds / concurrency if concurrency else None,
        "max_memory_bytes": max((r["memory_bytes"] for r in rows), default=0),
    }


def _search_plan(spec: SweepSpec, study_url: str, mode) -> dict[str, Any]:
    s = spec.search
    base = trial_row(spec.resolve({}), {})  # cost of one sample at the base values
    samples = s.num_samples  # one seed per sampled point
    remaining = mode.to_run
    seconds = base["seconds"] * remaining
    return {
        "search": {"metric": s.metric, "direction": s.mode, "num_samples": s.num_samples,
                   "storage": redact(study_url), "study_name": s.study_name, "space": s.space_text},
        "per_sample_at_base": base,
        "trials": [],
        "totals": {
            "trials": samples, "done": len(mode.known), "to_run": remaining,
            "flops_to_run": base["flops"] * remaining,
            "tokens_to_run": base["tokens"] * remaining,
            "seconds_to_run": seconds,
            "wall_seconds_at_concurrency": seconds / spec.concurrency if spec.concurrency else None,
            "max_memory_bytes": base["memory_bytes"],
        },
    }


# --- human-readable numbers -----------------------------------------------------------------
def si(value: float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def size(value: float) -> str:
    for unit, factor in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if value >= factor:
            return f"{value / factor:.3g} {unit}"
    return f"{int(value)} B"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_plan(plan: dict[str, Any]) -> str:
    head = [f"sweep {plan['sweep']} ({plan['file']}): experiment {plan['experiment']!r} "
            f"at {plan['tracking_uri']}"]
    if plan.get("from_study"):
        fs = plan["from_study"]
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in fs["params"].items())
        head.append(f"from study {fs['study']!r} ({fs['storage']}): {values}")
    if plan.get("workers", 1) > 1:
        placed = f", placement {plan['placement']}" if plan.get("placement") else ""
        head.append(f"workers: {plan['workers']} per trial{placed} (Ray Train TorchTrainer, PyTorch DDP; never fused): "
                    "memory is per worker, time is the wall time on all of them")
    if plan["mode"] == "search":
        return "\n".join(head + _format_search(plan) + _format_totals(plan["totals"]))
    return "\n".join(head + [""] + _format_table(plan["trials"]) + [""] + _format_totals(plan["totals"])
                     + _format_packs(plan))


def _format_packs(plan: dict[str, Any]) -> list[str]:
    packs = plan.get("packs") or []
    notes: dict[str, list[int]] = {}
    for row in plan.get("alone") or []:
        if fusion_asked(plan["fuse"]):  # auto's CPU note would be on every CPU sweep
            notes.setdefault(row["note"], []).append(row["trial"])
    alone = [f"  alone: #{', #'.join(map(str, n))}: {note}" for note, n in notes.items()]
    if not packs:
        return [f"fuse: {plan['fuse']} → no trials share a pack"] + alone if fusion_asked(plan["fuse"]) else []
    fused = sum(p["k"] for p in packs)
    lines = [f"fuse: {plan['fuse']} → {fused} of {plan['totals']['to_run']} trials to run in {len(packs)} fused "
             "pack(s), one Ray trial each (each member keeps its own MLflow run and checkpoints):"]
    for p in packs:
        if p["speedup"] is not None:
            speed = f"{p['speedup']:.2f}× the step throughput of its members one at a time (measured here)"
        elif p["gpu"]:
            speed = "speed-up not measured (a GPU pack; benchmarks/bench_fused.py on the GPU measures it)"
        else:
            speed = "speed-up not measured (--no-measure)"
        lines.append(f"  {p['id']}: K={p['k']}, trials #{', #'.join(map(str, p['trials']))}, "
                     f"memory {size(p['memory_bytes'])}, gpu {p['gpu']:g}; {speed}")
    return lines + alone


def _format_table(rows: list[dict[str, Any]]) -> list[str]:
    header = ("#", "label", "hash", "params", "tokens", "FLOPs", "memory", "gpu", "est. time", "status")
    cells = [header] + [
        (str(i), r["label"], r["hash"], si(r["n_params"]), si(r["tokens"]), f"{r['flops']:.2e}",
         size(r["memory_bytes"]), f"{r['gpu']:g}", duration(r["seconds"]), r["done"] or "to run")
        for i, r in enumerate(rows, 1)]
    widths = [max(len(row[c]) for row in cells) for c in range(len(header))]
    right = {0, 3, 4, 5, 6, 7, 8}
    return ["  ".join(cell.rjust(w) if c in right else cell.ljust(w)
                      for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in cells]


def _format_search(plan: dict[str, Any]) -> list[str]:
    s, base = plan["search"], plan["per_sample_at_base"]
    lines = [f"search: {s['num_samples']} samples × {len(plan['seeds'])} seed(s), "
             f"{s['direction']} {s['metric']}, study {s['study_name']!r} at {s['storage']}"]
    lines += [f"  {key}: {text}" for key, text in s["space"].items()]
    lines.append(f"one sample at the base values: {si(base['n_params'])} params, {si(base['tokens'])} tokens, "
                 f"{base['flops']:.2e} FLOPs, {size(base['memory_bytes'])}, ~{duration(base['seconds'])}")
    return lines


def _format_totals(t: dict[str, Any]) -> list[str]:
    line = (f"total: {t['trials']} trials, {t['done']} done, {t['to_run']} to run: "
            f"{t['flops_to_run']:.2e} FLOPs, ~{duration(t['seconds_to_run'])} of compute")
    if t.get("wall_seconds_at_concurrency") is not None:
        line += f" (~{duration(t['wall_seconds_at_concurrency'])} at the sweep's concurrency)"
    return [line + f"; peak memory per trial {size(t['max_memory_bytes'])}"]
