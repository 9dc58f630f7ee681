"""Grid and search sweeps: the two ways `scalelab run` hands a sweep to Ray Tune.

Each mode owns what differs between them: what the sweep still owes (`owe`: `scalelab plan`
and `scalelab run` both ask it), the way back from a Tune trial's config to a scalelab Trial,
the Tune setup (param space, searcher, samples, each trial's folder name) and the sweep's
outcomes after a run. `runner.run_sweep` drives either.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, TextIO

from trainer.config import UserError

from .layout import DONE_OUTCOMES, OUTCOME_FINISHED, TAG_HASH, TAG_OUTCOME
from .fuse import effective_fuse
from .packing import make_packs, pack_summary
from .search import make_searcher
from .trial import GRID_TRIAL_KEY, trial_cost
from .uri_auth import redact


class GridTrials:
    """Tune config -> Trial of a grid sweep: each config carries its resolved trial."""

    def __init__(self, trials: list):
        self.by_hash = {t.hash: t for t in trials}

    def add_packs(self, packs: list) -> None:
        """Fused packs answer for their own config (a lone trial is already known by its hash)."""
        self.by_hash.update({p.hash: p for p in packs if p.fused})

    def __call__(self, config: dict):
        return self.by_hash[config[GRID_TRIAL_KEY]["hash"]]

    @staticmethod
    def resources(config: dict) -> dict:
        # Read from the config itself: Tune pickles this function, so it carries no trial list.
        return config[GRID_TRIAL_KEY]["resources"]


class SampledTrials:
    """Tune config (sampled values) -> Trial of a search sweep, through `spec.resolve` (cached)."""

    def __init__(self, spec):
        self.spec = spec
        self._cache: dict[str, Any] = {}

    def __call__(self, config: dict):
        key = repr(sorted(config.items()))
        if key not in self._cache:
            try:
                self._cache[key] = self.spec.resolve(dict(config))
            except UserError as err:  # a sampled point the config rejects: that trial fails, not the sweep
                self._cache[key] = SimpleNamespace(
                    hash=None, config=None, label=f"invalid point {dict(config)} ({err})",
                    resources={"cpu": self.spec.resources["cpu"], "gpu": 0.0})
        return self._cache[key]

    def resources(self, config: dict) -> dict:
        return self(config).resources


class GridSweep:
    """Every trial of `spec.trials()` without a result in the experiment, as one grid_search axis."""

    objective = ("final_val_loss", "min")  # what "best so far" means for a grid sweep
    num_samples = 1
    searcher = None
    worker_spec = None   # workers get each resolved trial in its config

    def __init__(self, spec, fuse):
        self.name = spec.name
        self.trials = spec.trials()
        self.lookup = GridTrials(self.trials)
        self.fuse, self.gpu_auto, self.gpu_memory_gb = fuse, spec.resources["gpu"] == "auto", spec.gpu_memory_gb
        self.pending: list = []
        self.packs: list = []   # packing.Pack: how the pending trials run (one Ray trial each)
        self.done_before: dict[str, str] = {}
        self.known: dict[str, float | None] = {}
        self.work: dict[str, float] = {}   # hash -> estimated compute seconds of pending trials

    @property
    def total(self) -> int:
        return len(self.trials)

    @property
    def to_run(self) -> int:
        return len(self.pending)

    def owe(self, done: dict[str, str], own_runs: list) -> None:
        """Owed: the trials with no result in the experiment (`done`: {hash: outcome}, any sweep)
        nor among this sweep's own runs (`own_runs`)."""
        done = {**done, **own_results(own_runs)}
        self.pending = [t for t in self.trials if t.hash not in done]
        self.done_before = {t.hash: done[t.hash] for t in self.trials if t.hash in done}
        self.work = {t.hash: trial_cost(t)["seconds"] for t in self.pending}

    def plan_run(self, tracker, done: dict[str, str], out: TextIO) -> None:
        self.owe(done, tracker.child_runs())
        print(f"[{self.name}] {self.total} trials: {self.total - self.to_run} already done, "
              f"{self.to_run} to run", file=out, flush=True)

    def claim(self, tracker, out: TextIO) -> None:
        """Keep only the pending trials this invocation holds (tracker.claim); say which another
        `scalelab run` holds and which got a result meanwhile."""
        if not self.pending:
            return
        mine, held, done = tracker.claim(self.pending)
        for trial in done:
            self.done_before[trial.hash] = tracker.children[trial.hash].outcome
        self.pending = mine
        self.work = {t.hash: self.work[t.hash] for t in mine}
        if held:
            owners = ", ".join(sorted(set(held.values())))
            print(f"[{self.name}] {len(held)} trial(s) held by another scalelab run ({owners}): not run now; "
                  "run the same command again after it ends (a dead run's claim expires after "
                  "its lease)", file=out, flush=True)
        if done:
            print(f"[{self.name}] {len(done)} trial(s) got a result meanwhile", file=out, flush=True)

    def form_packs(self) -> list:
        """The pending trials as fused packs (`fuse`, packing.py) or alone."""
        return make_packs(self.pending, self.fuse, self.gpu_auto, self.gpu_memory_gb)

    def pack(self, out: TextIO) -> None:
        """Group the trials this invocation holds into fused packs (`fuse`, packing.py)."""
        self.packs = self.form_packs()
        self.lookup.add_packs(self.packs)
        note = pack_summary(self.packs, self.fuse)
        if note:
            print(f"[{self.name}] {note}", file=out, flush=True)

    @property
    def tune_trials(self) -> int:
        return len(self.packs)

    @property
    def param_space(self) -> dict:
        from ray import tune  # ~2 s to import: `scalelab plan` asks this module what is owed without Ray

        return {GRID_TRIAL_KEY: tune.grid_search([p.to_payload() for p in self.packs])} if self.packs else {}

    @staticmethod
    def trial_dirname(tune_trial) -> str:
        return tune_trial.config[GRID_TRIAL_KEY]["hash"]

    def outcomes(self, tracker) -> dict[str, str]:
        """hash -> outcome of every trial of the sweep that has one (not only what ran now)."""
        out = {}
        for trial in self.trials:
            child = tracker.children.get(trial.hash)
            outcome = child.outcome if child and child.outcome else self.done_before.get(trial.hash)
            if outcome:
                out[trial.hash] = outcome
        return out

    def label(self, trial_hash: str) -> str | None:
        trial = self.lookup.by_hash.get(trial_hash)
        return trial.label if trial else None


class SearchSweep:
    """Optuna samples the points through Tune's OptunaSearch; the study persists at `study_url`,
    so a rerun runs only the samples still owed."""

    def __init__(self, spec, study_url: str, fuse):
        self.name, self.search, self.study_url = spec.name, spec.search, study_url
        self.fuse = fuse   # samples never fuse; kept so that `plan` shows the setting
        self.lookup = SampledTrials(spec)
        self.worker_spec = spec   # workers resolve the sampled values themselves
        self.objective = (spec.search.metric, spec.search.mode)
        self.known: dict[str, float | None] = {}   # hash -> objective of done samples (replayed, not rerun)
        self.searcher = None
        self.to_run = 0
        self.param_space: dict = {}   # OptunaSearch proposes every point
        self.work: dict = {}          # points are unknown until Optuna proposes them: ETA by count

    @property
    def total(self) -> int:
        return self.search.num_samples

    @property
    def num_samples(self) -> int:
        return self.to_run

    def owe(self, done: dict[str, str], own_runs: list) -> None:
        """Owed: num_samples minus this sweep's own samples with a result (`own_runs`); `done`
        (the whole experiment) does not count: other sweeps' runs were not drawn by this study."""
        s = self.search
        self.known = {h: run.data.metrics.get(s.metric) for h, run in own_results(own_runs, runs_too=True).items()}
        self.to_run = max(0, s.num_samples - len(self.known))

    def plan_run(self, tracker, done: dict[str, str], out: TextIO) -> None:
        self.owe(done, tracker.child_runs())
        print(f"[{self.name}] search: {len(self.known)} of {self.search.num_samples} samples done, {self.to_run} "
              f"to run (study {self.search.study_name!r} at {redact(self.study_url)})", file=out, flush=True)

    def claim(self, tracker, out: TextIO) -> None:
        """A search sweep is one stream of samples from one study: the invocation that runs it
        claims the whole sweep (tracker.claim_sweep) before it opens the study (which re-queues
        the samples a dead run left RUNNING). While another live `scalelab run` holds it, this
        one runs nothing and says who holds it."""
        if not self.to_run:
            return
        holder = tracker.claim_sweep()
        if holder:
            self.to_run = 0
            print(f"[{self.name}] search sweep held by another scalelab run ({holder}): no samples run now; "
                  "wait for it, or run the same command again after it ends (a dead run's claim expires "
                  "after its lease)", file=out, flush=True)
            return
        before = len(self.known)
        self.owe({}, tracker.child_runs())  # the previous holder may have finished samples since plan_run
        if len(self.known) != before:
            print(f"[{self.name}] {len(self.known) - before} sample(s) got a result meanwhile; "
                  f"{self.to_run} to run", file=out, flush=True)
        if not self.to_run:
            return
        self.searcher, requeued = make_searcher(self.search, self.study_url)
        if requeued:
            print(f"[{self.name}] {requeued} interrupted sample(s) re-queued", file=out, flush=True)

    @staticmethod
    def trial_dirname(tune_trial) -> str:
        return tune_trial.trial_id

    def pack(self, out: TextIO) -> None:
        """Samples are drawn one at a time: never fused."""

    @property
    def tune_trials(self) -> int:
        return self.to_run

    def outcomes(self, tracker) -> dict[str, str]:
        return {h: child.outcome for h, child in tracker.children.items() if child.outcome}

    def label(self, trial_hash: str) -> str | None:
        return None  # samples are labelled by their runs


def own_results(runs: list, runs_too: bool = False) -> dict:
    """{hash: outcome} of a sweep's own trial runs that have a result (finished wins over
    diverged); with `runs_too`, {hash: the run} instead."""
    out: dict = {}
    for run in runs:
        tags = run.data.tags
        outcome, trial_hash = tags.get(TAG_OUTCOME), tags.get(TAG_HASH)
        if trial_hash and outcome in DONE_OUTCOMES and (trial_hash not in out or outcome == OUTCOME_FINISHED):
            out[trial_hash] = run if runs_too else outcome
    return out


def sweep_mode(spec, study_url: str | None = None, fuse=None):
    """The sweep's mode; `fuse` is the --fuse flag (None: the sweep file's `fuse`)."""
    fuse = effective_fuse(fuse, spec.fuse)
    return SearchSweep(spec, study_url, fuse) if spec.mode == "search" else GridSweep(spec, fuse)
