"""The report builds from a Parquet snapshot alone (no MLflow), puts the parametrizations side
by side, writes every figure it has data for and says why the others were skipped."""
from __future__ import annotations

import json

import pytest

from analysis import synthetic as syn
from analysis.fits import FitOptions, run_fits
from analysis.report import build_report
from analysis.tables import Tables
from trainer.config import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    tables, truth = syn.synthetic_tables(seed=2, norms=syn.NormSpec(), tuning=syn.TuningSpec())
    snapshot = tables.save(tmp / "snap.parquet")
    lines = []
    summary = build_report(Tables.load(snapshot), tmp / "out", FitOptions(n_boot=60, n_boot_scaling=30),
                           progress=lines.append)
    return tmp / "out", summary, lines, truth


@pytest.mark.slow  # the full report of every fit and figure
def test_summary_json_holds_every_fit_as_strict_json(full_report):
    out, summary, _, _ = full_report
    data = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert set(data["results"]) == {"comparison", "transfer", "multipliers", "multiplier_updates", "norms", "scaling",
                                    "tuning", "search", "coord_check"}
    # this world has no mis-set-multiplier sweep: tests/test_analysis_replication.py reports one
    assert set(data["skipped"]) == {"freedom"}
    # every fit says how it counted diverged and failed runs
    assert all({"diverged", "failed"} <= set(r["treatment"]) for r in data["results"].values())
    assert data["n_trials"] == len(Tables.load(out.parent / "snap.parquet").trials)
    sp = next(g for g in data["results"]["transfer"]["groups"] if g["label"] == "sp [sweep=transfer]")
    assert sp["gamma_ci"][0] < -1.0 < sp["gamma_ci"][1]
    assert data == summary


@pytest.mark.slow  # the full report of every fit and figure
def test_every_figure_is_written_as_png_and_svg(full_report):
    out, summary, _, _ = full_report
    expected = {"loss_vs_hp", "optimum_vs_size", "multipliers_vs_width", "multiplier_updates", "loss_vs_params",
                "loss_gap", "equilibrium_norms", "tuning_cost", "training_curves", "coord_check"}
    assert set(summary["figures"]) == expected and set(summary["skipped_figures"]) == {"mis_set_penalty"}
    for name in expected:
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
        assert b"<svg" in (out / "figures" / f"{name}.svg").read_bytes()[:2000]


@pytest.mark.slow  # the full report of every fit and figure
def test_report_md_puts_parametrizations_side_by_side(full_report):
    out, _, lines, _ = full_report
    text = (out / "report.md").read_text()
    assert "| d_model | mup | mup+scalar | sp |" in text
    assert "## Transfer of the optimal lr across d_model" in text
    assert "| sp [sweep=transfer] | -1" in text or "| sp [sweep=transfer] | -0.9" in text
    for section in ("## Learned multipliers vs width", "## Equilibrium norms", "## Scaling law",
                    "## Tuning cost", "## Coordinate check", "## How runs were counted"):
        assert section in text
    assert "![" in text and "(figures/loss_vs_hp.png)" in text
    assert any(line.startswith("fit: transfer") for line in lines)      # progress per stage
    assert any(line.startswith("figure: coord_check") for line in lines)


@pytest.mark.slow  # the full report of every fit and figure
def test_report_html_embeds_every_figure_it_shows(full_report):
    """MLflow shows an HTML artifact from a blob URL, where a relative image does not load: every
    <img> of report.html is a data URI, one per figure that report.md shows."""
    import re

    out, summary, _, _ = full_report
    page = (out / "report.html").read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "report.md").read_text())
    assert len(sources) == len(shown) >= 5
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "<table>" in page and "<h2>Transfer of the optimal lr across d_model</h2>" in page


def test_report_html_translates_the_markdown_report_md_writes(tmp_path):
    from analysis.report_html import to_html

    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(PNG_MAGIC + b"rest")
    md = ("# scalelab report: x\n\nGenerated <now>; **met** and _Figure loss_vs_hp skipped: no data_.\n\n"
          "| a | b |\n|---|---|\n| 1 | `c_d` |\n\n![The a figure](figures/a.png)\n\n![gone](figures/b.png)\n\n"
          "## Figures\n- `a`: x\n- `b` skipped: y")
    page = to_html(md, tmp_path, "t")
    assert "<h1>scalelab report: x</h1>" in page and "&lt;now&gt;" in page
    assert "<strong>met</strong>" in page and "<em>Figure loss_vs_hp skipped: no data</em>" in page
    assert "<th>a</th><th>b</th>" in page and "<td><code>c_d</code></td>" in page
    assert 'src="data:image/png;base64,' in page and "<figcaption>The a figure</figcaption>" in page
    assert "figures/b.png not found" in page and page.count("<img") == 1   # never a broken image
    assert "<li><code>b</code> skipped: y</li>" in page


@pytest.mark.slow  # the full report of every fit and figure
def test_a_search_sweep_lists_its_samples_and_best_parameters(full_report):
    out, summary, _, _ = full_report
    (sweep,) = summary["results"]["search"]["sweeps"]
    assert sorted(sweep["searched"]) == ["alpha_out", "lr"] and len(sweep["samples"]) == 30
    losses = [x["loss"] for x in sweep["samples"] if x["loss"] is not None]
    assert losses == sorted(losses) and sweep["best"] == sweep["samples"][0]
    text = (out / "report.md").read_text()
    assert "## Search samples" in text and f"| sample | {' | '.join(sweep['searched'])} | outcome | final_val_loss |" in text
    assert "**Best: " in text and "lr = " in text


def test_search_samples_rank_finished_runs_and_list_the_others_last():
    import pandas as pd

    from analysis.tuning import search_samples

    trials = pd.DataFrame({"sweep": "s", "mode": "search", "label": ["a", "b", "c", "d"], "parametrization": "mup",
                           "lr": [1e-3, 2e-3, 3e-3, 4e-3], "steps": 10,
                           "outcome": ["finished", "diverged", "finished", "failed"],
                           "final_val_loss": [3.0, float("nan"), 2.5, None]})
    (sweep,) = search_samples(trials).sweeps
    assert sweep.searched == ["lr"]                        # steps is the same in every sample
    assert [x.label for x in sweep.samples] == ["c", "a", "b", "d"]
    assert [x.loss for x in sweep.samples] == [2.5, 3.0, None, None]
    assert sweep.best.label == "c" and sweep.best.params == {"lr": 3e-3}


def test_report_ids_never_reuse_a_folder(tmp_path):
    from datetime import datetime, timezone

    from analysis.cli import new_report_id

    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert new_report_id(str(tmp_path), now=now) == "20250102-030405"
    (tmp_path / "20250102-030405").mkdir()
    assert new_report_id(str(tmp_path), now=now) == "20250102-030405-2"
    assert new_report_id(str(tmp_path), {"20250102-030405-2"}, now=now) == "20250102-030405-3"


def test_a_sweep_without_the_data_for_a_figure_says_why(tmp_path):
    spec = syn.TransferSpec(widths=(256,), seeds=2)   # one width, no sqrt(η/λ) sweep, no search sweep
    tables, _ = syn.synthetic_tables(transfer=spec, history=False)
    summary = build_report(Tables.load(tables.save(tmp_path / "s.parquet")), tmp_path / "out",
                           FitOptions(n_boot=30, n_boot_scaling=20))
    text = (tmp_path / "out" / "report.md").read_text()
    assert "sqrt(η/λ) sweep" in summary["skipped"]["norms"]
    assert "`equilibrium_norms` skipped" in text
    assert "optimum_vs_size" in summary["skipped_figures"] and "≥ 2 values of d_model" in summary["skipped_figures"]["optimum_vs_size"]
    assert "training_curves" in summary["skipped_figures"] and "coord_check" in summary["skipped_figures"]
    assert "loss_vs_hp" in summary["figures"]
    assert "## Warnings" in text and "γ and the drift need a sweep over d_model" in text


def test_empty_or_unlabelled_tables_are_user_errors():
    tables, _ = syn.synthetic_tables(history=False)
    with pytest.raises(UserError, match="no trial runs"):
        run_fits(Tables(trials=tables.trials.iloc[:0]))
    with pytest.raises(UserError, match=r"\['parametrization'\]"):
        run_fits(Tables(trials=tables.trials.drop(columns=["parametrization"])))


def test_coord_check_figure_is_drawn_without_pyplot(tmp_path):
    """`scalelab coord-check` draws on the analysis side with a plain Figure (no pyplot state)."""
    import subprocess
    import sys

    import pandas as pd

    code = ("import sys; from analysis.coord_figure import write_coord_check\n"
            "rows = [dict(scheme=s, width=w, seed=0, step=t, layer='block.0', value=w * (t + 1.0))\n"
            "        for s in ('sp', 'mup') for w in (64, 128) for t in (0, 1)]\n"
            f"paths = write_coord_check(rows, {str(tmp_path)!r})\n"
            "print(sorted(paths), 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["['csv',", "'png',", "'svg']", "False"]
    assert (tmp_path / "coord_check.png").read_bytes().startswith(PNG_MAGIC)
    assert len(pd.read_csv(tmp_path / "coord_check.csv")) == 8


def test_depth_transfer_runs_only_when_depth_varies():
    """The registry's one conditional analysis: beside the width transfer when n_layers varies,
    and neither run nor listed as skipped otherwise."""
    tables, _ = syn.synthetic_tables(transfer=syn.TransferSpec(widths=(128, 256), seeds=2), history=False)
    options = FitOptions(n_boot=20, n_boot_scaling=10)
    assert "transfer_depth" not in run_fits(tables, options)["results"]
    trials = tables.trials.copy()
    trials.loc[trials["seed"].eq(1), "n_layers"] = 4
    fits = run_fits(Tables(trials=trials), options)
    assert list(fits["results"])[:3] == ["comparison", "transfer", "transfer_depth"]
    assert fits["results"]["transfer_depth"].size == "n_layers" and "transfer_depth" not in fits["skipped"]


def test_registry_names_each_analysis_and_figure_once():
    from analysis.registry import ANALYSES, FIGURES

    names = [a.name for a in ANALYSES]
    assert len(set(names)) == len(names) and len({f.name for f in FIGURES}) == len(FIGURES)
    assert all(f.analysis in ANALYSES for f in FIGURES)


def test_report_cli_defaults_are_the_fit_options():
    import argparse

    from analysis import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    assert cli._options(parser.parse_args(["report", "some-experiment"])) == FitOptions()
