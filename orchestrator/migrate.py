"""`scalelab migrate EXPERIMENT`: re-key trial runs recorded under an older trial-identity rule.

Each trial run's resolved config (its `config.yaml` artifact) is hashed again with today's
`trial_hash`; the run keeps its old hash in `scalelab.trial_hash_v1` and is tagged with the
current identity version. With --storage, the trial's checkpoint directory is renamed to the new
hash so an interrupted trial still resumes. Safe to run twice: migrated runs are skipped.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass, field

import yaml

from trainer.config import TrainConfig, UserError

from .layout import (CONFIG_ARTIFACT, KIND_TRIAL, TAG_HASH, TAG_IDENTITY, TAG_KIND, TAG_PREVIOUS_HASH, quote, search_all,
                     resolve_tracking_uri, tracking_uri_help)
from .locations import storage_dir, trials_root
from .trial import IDENTITY_VERSION, trial_hash
from .trial_folder import trial_folder
from .uri_auth import redact


@dataclass
class Migration:
    rekeyed: dict[str, tuple[str, str]] = field(default_factory=dict)  # run id -> (old hash, new hash)
    moved: list[str] = field(default_factory=list)                      # checkpoint directories renamed
    problems: list[str] = field(default_factory=list)                   # runs left as they were, and why
    current: int = 0                                                    # runs already at this version

    def shared(self) -> dict[str, int]:
        """New hashes held by several runs: one trial recorded twice under different runtime options."""
        counts: dict[str, int] = {}
        for _, new in self.rekeyed.values():
            counts[new] = counts.get(new, 0) + 1
        return {h: n for h, n in counts.items() if n > 1}


def migrate_experiment(tracking_uri: str, experiment: str, storage: str | None = None,
                       dry_run: bool = False) -> Migration:
    from mlflow.tracking import MlflowClient  # seconds to import: not for the other commands

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise UserError(f"no MLflow experiment {experiment!r} at {redact(tracking_uri)}; check the name "
                        "(`experiment:` of the sweep file, or its `name:`)")
    result = Migration()
    trials_dir = trials_root(storage_dir(storage), experiment) if storage else None
    for run in search_all(client, found.experiment_id, f"tags.`{TAG_KIND}` = {quote(KIND_TRIAL)}"):
        tags, run_id = run.data.tags, run.info.run_id
        if tags.get(TAG_IDENTITY) == str(IDENTITY_VERSION):
            result.current += 1
            continue
        try:
            cfg = TrainConfig.build(_recorded_config(client, run_id), source=f"run {run_id} {CONFIG_ARTIFACT}")
        except (UserError, OSError) as err:
            result.problems.append(f"run {run_id}: {err}")
            continue
        old, new = tags.get(TAG_HASH, ""), trial_hash(cfg)
        result.rekeyed[run_id] = (old, new)
        if trials_dir and old and _move_checkpoints(trials_dir, old, new, dry_run):
            result.moved.append(f"{old} -> {new}")
        if not dry_run:
            client.set_tag(run_id, TAG_PREVIOUS_HASH, old)
            client.set_tag(run_id, TAG_HASH, new)
            client.set_tag(run_id, TAG_IDENTITY, str(IDENTITY_VERSION))  # last: marks the run done
    return result


def _recorded_config(client, run_id: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
        except Exception as err:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
            raise UserError(f"its {CONFIG_ARTIFACT} artifact cannot be read ({type(err).__name__}); "
                            "the run cannot be re-keyed and will not be recognised as done") from None
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh) or {}


def _move_checkpoints(trials_dir: str, old: str, new: str, dry_run: bool) -> bool:
    src, dst = trial_folder(trials_dir, old), trial_folder(trials_dir, new)
    if old == new or not os.path.isdir(src) or os.path.exists(dst):
        return False
    if not dry_run:
        os.replace(src, dst)
    return True


def register(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "migrate", help="re-key an experiment's trial runs after a change of the trial-identity rule",
        description="Recompute the trial hash of every trial run of EXPERIMENT recorded under an older "
                    f"identity rule (before version {IDENTITY_VERSION}) from its {CONFIG_ARTIFACT}, so that "
                    "`scalelab run` recognises finished trials again. Old hashes are kept in the tag "
                    f"{TAG_PREVIOUS_HASH}. Safe to repeat.")
    cmd.add_argument("experiment", help="MLflow experiment name (the sweep's `experiment:`, default its name)")
    cmd.add_argument("--tracking-uri", default=None, help=tracking_uri_help(sweep_file=False))
    cmd.add_argument("--storage", default=None, help="the sweep storage directory (e.g. .scalelab) whose "
                     "trial checkpoint directories are renamed along (default: leave checkpoints alone)")
    cmd.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
    cmd.set_defaults(func=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    uri = resolve_tracking_uri(args.tracking_uri)
    result = migrate_experiment(uri, args.experiment, args.storage, args.dry_run)
    verb = "would re-key" if args.dry_run else "re-keyed"
    print(f"{args.experiment}: {verb} {len(result.rekeyed)} trial run(s); {result.current} already at identity "
          f"version {IDENTITY_VERSION}; {len(result.moved)} checkpoint folder(s) "
          f"{'to rename' if args.dry_run else 'renamed'}")
    for new, n in result.shared().items():
        print(f"  note: {n} runs now share trial hash {new} (one trial run under different runtime options); "
              "the finished one counts, the others stay for reference")
    for problem in result.problems:
        print(f"  not re-keyed: {problem}", file=sys.stderr)
    return 1 if result.problems else 0
