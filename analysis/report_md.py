"""report.md from a summary dict (its `results`: typed results, or their JSON as in summary.json): tables
that put the parametrizations side by side, the figures, what was skipped and why, and every warning.
One section per analysis (`*_section(result, summary)`); analysis/report.py `render` puts them in
the order of registry.ANALYSES (the registry imports this module, so this module does not
import the registry)."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .comparison import Comparison
from .coordcheck import CoordCheckResult
from .freedom import FreedomResult, Penalty
from .ladder import LadderResult
from .multiplier_scaling import WIDTH, MultiplierResult
from .multiplier_updates import MultiplierUpdatesResult
from .norms import NormsResult
from .scaling import ScalingResult
from .stats import LogLogFit
from .transfer import PREDICTED_GAMMA, TransferCurve, TransferResult
from .tuning import SearchResult, TuningResult


# ---- formatting ---------------------------------------------------------------------------

def num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def with_ci(value: Any, ci: list | None, digits: int = 4) -> str:
    text = num(value, digits)
    if value is not None and ci and ci[0] is not None:
        text += f" [{num(ci[0], digits)}, {num(ci[1], digits)}]"
    return text


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _figure(summary: dict, name: str) -> str:
    fig = summary["figures"].get(name)
    if not fig:
        reason = summary["skipped_figures"].get(name)
        return f"_Figure {name} skipped: {reason}_" if reason else ""
    return f"![{fig['description']}]({fig['files'][0]})"


# ---- sections -------------------------------------------------------------------------------

def header_part(s: dict) -> str:
    outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(s["outcomes"].items()))
    return (f"# scalelab report: {', '.join(s['experiments']) or 'snapshot'}\n\n"
            f"Generated {s['generated_utc']} UTC from {s['source']}; {s['n_trials']} trial run(s) ({outcomes}); "
            f"sweeps: {', '.join(s['sweeps']) or 'n/a'}. Intervals are {int(s['options']['level'] * 100)}% "
            f"(bootstrap seed {s['options']['seed']}); every number is in summary.json.")


def comparison_section(c: Comparison, s: dict) -> str:
    by, labels = c.by, c.parametrizations
    hp_key = f"best_{c.hp}"
    cells: dict[tuple, dict] = {}
    for row in c.best:
        key = tuple(row.get(k) for k in by)
        text = f"{num(row['loss_mean'])} ± {num(row['loss_sem'], 2)} (n={row['n']}"
        text += f", {c.hp}={num(row[hp_key], 3)})" if hp_key in row else ")"
        cells.setdefault(key, {})[row["parametrization"]] = text
    rows = [[*key, *(cells[key].get(lab, "—") for lab in labels)] for key in sorted(cells)]
    out = [f"## Best {c.loss} per parametrization and size",
           f"Mean ± s.e.m. over the seeds of each size's best {c.hp} (finished grid runs, all sweeps).",
           table(by + labels, rows)]
    if c.gaps:
        gap_rows = [[*(g.get(k) for k in by), g["parametrization"], with_ci(g["gap"], g["gap_ci"], 3),
                     f"{g['n']} / {g['n_reference']}"] for g in c.gaps]
        out += [f"### Loss gap to {c.reference} (negative = better than {c.reference})",
                table(by + ["parametrization", "gap (nats) [CI]", "seeds / reference seeds"], gap_rows),
                _figure(s, "loss_gap")]
    out.append(_figure(s, "training_curves"))
    return "\n\n".join(o for o in out if o)


def transfer_section(t: TransferResult, s: dict, figure: str = "optimum_vs_size") -> str:
    hp, size = t.hp, t.size
    groups = [[g.label, with_ci(g.gamma, g.gamma_ci, 3), with_ci(g.drift_steps, g.drift_steps_ci, 3),
               ", ".join(num(x) for x in g.sizes) or "—", g.ci_method or g.note or "—"]
              for g in t.groups]
    curve_rows = [[c.label, num(c.size), with_ci(c.log2_opt, c.log2_opt_ci, 3), num(c.loss_at_opt),
                   with_ci(c.sensitivity, c.sensitivity_ci, 3), f"{c.n_runs} ({c.n_diverged} div.)",
                   _flags(c)] for c in t.curves]
    rng = t.sensitivity_range_log2
    rng_text = f"log2 {hp} ∈ [{num(rng[0])}, {num(rng[1])}]" if rng else "each curve's own grid"
    return "\n\n".join(x for x in [
        f"## Transfer of the optimal {hp} across {size}",
        f"{_estimator_text(t)}; interval = percentile interval of a bootstrap over seeds (seeds resampled "
        f"per grid point, {t.n_boot} replicates, the optimum re-fitted per replicate). γ: slope of log {hp}* vs "
        f"log {size}{_predicted_gamma(hp, size)}. Drift: change of log2 {hp}* from the smallest to the "
        f"largest {size}, in grid steps.",
        table(["parametrization", "γ [CI]", "drift (grid steps) [CI]", f"{size} with an optimum", "interval"], groups),
        _figure(s, figure),
        f"### Optima and {'LR ' if hp == 'lr' else ''}sensitivity per {size}",
        f"Sensitivity (Wortsman et al. 2023): mean over {rng_text} of min(ℓ(η), ℓ_init) − ℓ*, ℓ_init = "
        f"{num(t.init_loss)} nats.",
        table(["parametrization", size, f"log2 {hp}* [CI]", "loss at optimum", "sensitivity [CI]", "runs", "flags"],
              curve_rows),
        _figure(s, "loss_vs_hp") if figure == "optimum_vs_size" else ""] if x)


def _predicted_gamma(hp: str, size: str) -> str:
    said = PREDICTED_GAMMA.get((hp, size))
    return f" ({said[1]})" if said else ""


def _estimator_text(t: TransferResult) -> str:
    window = f"the best grid point ± {t.k} points"
    if t.estimator == "asymmetric":
        return (f"Optimum = x0 of the least-squares asymmetric bowl L = c + a·f(log2 {t.hp} − x0) through {window} "
                "(≥ 4 finite points; f exponential or two half-parabolas, its asymmetry fitted too; a window of "
                "4 points fits only shapes at least as steep above the optimum as below, as loss-vs-log-η curves are; 3 points: "
                "the parabola through them)")
    return f"Optimum = vertex of a least-squares parabola in log2 {t.hp} through {window}"


def _flags(c: TransferCurve) -> str:
    flags = []
    if c.at_edge:
        flags.append("at grid edge")
    if c.clipped:
        flags.append("clipped to window")
    if c.convex is False:
        flags.append("not convex")
    if c.log2_opt is None:
        flags.append("no optimum")
    return ", ".join(flags) or "—"


def transfer_depth_section(t: TransferResult, s: dict) -> str:
    return transfer_section(t, s, "optimum_vs_depth")


def multipliers_section(m: MultiplierResult, s: dict) -> str:
    out = [f"## Learned multipliers vs {'width' if m.size == WIDTH else m.size}",
           f"Exponent p of multiplier ∝ {m.size}^p ({m.aggregation}; {m.selection}). "
           f"{m.prediction_note}."]
    for g in m.groups:
        if not g.series:
            continue
        rows = [[x.name, _exponent(x.fit), num(x.prediction), num(x.minus_prediction, 3), x.fit.n_runs, x.source]
                for x in g.series]
        out += [f"### {g.label}", table(["series", "exponent p [CI]", "µP prediction", "p − prediction", "runs", "source"], rows)]
        norms = [[x.role, _exponent(x.fit), x.fit.n_runs] for x in g.matrix_norms or [] if x.fit.exponent is not None]
        if norms:
            out += [f"Matrix RMS (stored weights, weight_rms) vs {m.size}"
                    + (": the paper finds it roughly width-independent (exponent ≈ 0) once multipliers carry the scale."
                       if m.predictions else "."),
                    table(["matrix", "exponent [CI]", "runs"], norms)]
    out.append(_figure(s, "multipliers_vs_width"))
    return "\n\n".join(o for o in out if o)


def _exponent(fit: LogLogFit) -> str:
    return with_ci(fit.exponent, fit.exponent_ci, 3)


def multiplier_updates_section(mu: MultiplierUpdatesResult, s: dict) -> str:
    sizes = sorted({p["size"] for g in mu.groups for p in g.points})
    rows = []
    for g in mu.groups:
        at = {x: [p for p in g.points if p["size"] == x] for x in sizes}
        rates = [num(float(np.exp(np.mean(np.log([p["rate"] for p in ps])))), 3) if ps else "—" for ps in at.values()]
        losses = [num(float(np.mean([p["loss"] for p in ps if p["loss"] is not None])), 4)
                  if any(p["loss"] is not None for p in ps) else "—" for ps in at.values()]
        rows.append([g.label, _exponent(g.fit), *rates, *losses])
    size = mu.size
    return "\n\n".join([
        f"## The multipliers' relative change per step vs {size}",
        f"Rate = {mu.rate}; exponent p of rate ∝ {size}^p (log-log OLS over runs, t-interval). p ≈ 0: the "
        "multipliers move as fast at every width, as µP asks of every parameter's relative update.",
        table(["group", "exponent p [CI]", *(f"rate at {num(x)}" for x in sizes), *(f"loss at {num(x)}" for x in sizes)],
              rows),
        _figure(s, "multiplier_updates")])


def norms_section(n: NormsResult, s: dict) -> str:
    out = ["## Equilibrium norms",
           "Log-log slope against S = sqrt(η/λ) of the hidden matrices (lr·lr_mult_hidden / weight_decay·wd_mult_hidden): matrix RMS should follow S (slope 1); with learnable "
           "multipliers the effective RMS should stay flat (slope 0), and so should the loss. The slope can change "
           "along S (≈ 0.5 at small S, ≈ 1 at large S in measured sweeps): with ≥ 4 values of S, two lines meeting "
           "at a breakpoint S_b chosen by least squares give a slope below and above S_b (OLS t-intervals given S_b)."]
    for sw in n.sweeps:
        rows = [[x.kind, x.role, _exponent(x.fit), num(x.predicted), *_segments(x.segments), x.fit.n_runs]
                for x in sw.series + [dataclasses.replace(p, kind=k) for k, p in sw.pooled.items()]]
        v = sw.verdict
        out += [f"### {sw.label} (sqrt(η·λ) = {num(sw.sqrt_lr_wd, 3)}, S from {num(min(sw.S_values), 3)} to "
                f"{num(max(sw.S_values), 3)}, loss spread over S: {num(sw.loss.spread, 3)} nats)",
                f"Criterion: pooled {v.quantity} {v.target}: slope {with_ci(v.slope, v.slope_ci, 3)} — "
                f"**{'met' if v.met else 'not met'}**.",
                table(["quantity", "role", "slope [CI]", "predicted", "S_b", "slope below S_b [CI]",
                       "slope above S_b [CI]", "runs"], rows)]
    if n.comparisons:
        rows = [[c.with_, c.without, num(c.spread_with, 3), num(c.spread_without, 3), num(c.ratio, 3),
                 "yes" if c.smaller_with_multipliers else "no"] for c in n.comparisons]
        out += ["### Loss spread over S with and without multipliers (max − min of the mean loss over S)",
                table(["with multipliers", "without", "spread with", "spread without", "ratio", "smaller with?"], rows)]
    out.append(_figure(s, "equilibrium_norms"))
    return "\n\n".join(out)


def _segments(seg) -> list[str]:
    if seg is None:
        return ["—", "—", "—"]
    return [num(seg.breakpoint_S, 3), with_ci(seg.slope_low, seg.slope_low_ci, 3),
            with_ci(seg.slope_high, seg.slope_high_ci, 3)]


def freedom_section(f: FreedomResult, s: dict) -> str:
    out = ["## Mis-set multipliers: does learning the scale remove the penalty?",
           f"Penalty = mean {f.loss} at a mis-set fixed multiplier − at the default setting (same parametrization); "
           f"relief = penalty without learnable multipliers − penalty with them (positive: the learnable multipliers "
           f"absorb the mis-set scale). Intervals: {f.ci_method}."]
    for g in f.groups:
        pen = {(x.parametrization, x.setting): x for x in g.penalties}
        rows = []
        for r in g.reliefs:
            plain, lrm = pen[(r.without, r.setting)], pen[(r.with_, r.setting)]
            rows.append([r.setting, _penalty(plain), _penalty(lrm), with_ci(r.relief, r.relief_ci, 3),
                         "yes" if r.clearly_smaller_with_multipliers else "no"])
        if rows:
            head = ["setting", f"penalty without ({g.reliefs[0].without})",
                    f"penalty with ({g.reliefs[0].with_})", "relief [CI]", "clearly smaller with?"]
            out += [f"### {g.label}", table(head, rows)]
    out.append(_figure(s, "mis_set_penalty"))
    return "\n\n".join(o for o in out if o)


def _penalty(x: Penalty) -> str:
    if x.n_diverged == x.n:
        return f"diverged ({x.n}/{x.n} seeds)"
    text = with_ci(x.penalty, x.penalty_ci, 3) + f" (n={x.n}"
    return text + (f", {x.n_diverged} diverged)" if x.n_diverged else ")")


def scaling_section(sc: ScalingResult, s: dict) -> str:
    with_d = sc.tokens_vary
    headers = ["parametrization", "E", "A", "α"] + (["B", "β"] if with_d else []) + ["sizes", "residual RMS (log)"]
    rows = []
    for f in sc.fits:
        if f.E is None:
            continue
        row = [f.label, with_ci(f.E, f.E_ci, 3), with_ci(f.A, f.A_ci, 3),
               with_ci(f.alpha, f.alpha_ci, 3)]
        if with_d:
            row += [with_ci(f.B, f.B_ci, 3), with_ci(f.beta, f.beta_ci, 3)]
        sizes = f"{f.n_sizes} (exact fit: no interval)" if f.exact_fit else f.n_sizes
        rows.append(row + [sizes, num(f.residual_rms, 2)])
    return "\n\n".join([f"## Scaling law: {sc.model}", f"{sc.method}; {sc.selection}.",
                        table(headers, rows), _figure(s, "loss_vs_params")])


def tuning_section(tu: TuningResult, s: dict) -> str:
    rows = []
    for c in tu.curves:
        match = c.compute_to_match or {}
        match_text = "; ".join(f"{k}: {num(v, 3)}" for k, v in match.items()) or "—"
        rows.append([c.label, c.kind, c.n_trials, num(c.best_loss), num(c.compute_to_best, 3),
                     num(c.total_compute, 3), match_text])
    return "\n\n".join(["## Tuning cost",
                        f"Best loss so far against cumulative compute ({tu.compute}), runs in start order. "
                        "'to match': compute the search needed to reach the multipliers' best loss at that width.",
                        table(["curve", "kind", "runs", "best loss", "compute to best", "total compute",
                               "search compute to match"], rows),
                        _figure(s, "tuning_cost")])


def ladder_section(la: LadderResult, s: dict) -> str:
    size = la.size
    rows = [[r["level"], ", ".join(r["tuned"]) or "none (defaults)", num(r["search_trials"]), num(r["cpu_hours"], 3),
             num(r[size]), f'{r["parent"]}: {with_ci(r["parent_loss"]["mean"], r["parent_loss"]["ci"])} (n={r["parent_loss"]["n"]})',
             f'{r["lrm"]}: {with_ci(r["lrm_loss"]["mean"], r["lrm_loss"]["ci"])} (n={r["lrm_loss"]["n"]})',
             with_ci(r["diff"], r["diff_ci"]), num(r["p_value"], 2)] for r in la.levels]
    parts = ["## Tuning ladder: learnable multipliers against their parent at each level of tuning",
             f"Each level: a sweep at its widest {size}, its values tuned by the search it names (its cost: the "
             f"search's runs, CPU-hours = training time × torch threads). {la.ci_method}.",
             table(["level", "tuned", "search runs", "CPU-hours", size, "parent", "with multipliers",
                    "multipliers − parent", "p (Welch)"], rows)]
    if la.untuned:
        parts.append("Learnable multipliers with less tuning against the parent with more "
                     "(difference < 0: learning the multipliers beat the extra tuning):")
        parts.append(table(["multipliers", "tuned for them", "against", "tuned for it", "difference", "p (Welch)"],
                           [[f'{u["lrm"]} ({u["untuned_level"]})', ", ".join(u.get("untuned_keys") or []) or "nothing",
                             f'{u["parent"]} ({u["tuned_level"]})', ", ".join(u["tuned"]) or "n/a",
                             with_ci(u["diff"], u["diff_ci"]), num(u["p_value"], 2)]
                            for u in la.untuned]))
    parts.append(_figure(s, "tuning_ladder"))
    return "\n\n".join(parts)


def search_section(se: SearchResult, s: dict) -> str:
    out = ["## Search samples",
           f"Every sample of each search sweep: its searched parameters, outcome and {se.loss}, best first "
           "(diverged and failed samples last, without a loss)."]
    for sw in se.sweeps:
        best = sw.best
        best_text = ("Best: " + ", ".join(f"{k} = {num(v)}" for k, v in best.params.items())
                     + f" ({se.loss} {num(best.loss)}, {best.label or 'unlabelled'})") if best else "No finished sample."
        rows = [[x.label or "—", *(num(x.params.get(k)) for k in sw.searched), x.outcome, num(x.loss)]
                for x in sw.samples]
        out += [f"### {sw.sweep or 'search'} ({len(sw.samples)} samples)", f"**{best_text}**",
                table(["sample", *sw.searched, "outcome", se.loss], rows)]
    return "\n\n".join(out)


def coord_check_section(cc: CoordCheckResult, s: dict) -> str:
    last = cc.steps[-1] if cc.steps else None
    rows = []
    for g in cc.groups:
        for x in g.slopes:
            if x.step == last:
                rows.append([g.label, x.name, _exponent(x.fit), num(g.setting, 3)])
    return "\n\n".join(["## Coordinate check",
                        f"Slope of log mean |activation| vs log {cc.size} at step {last} (≈ 0: width-independent, "
                        "as µP intends); the figure shows every step.",
                        table(["parametrization", "activation", "slope [CI]", "setting"], rows),
                        _figure(s, "coord_check")])


def figures_part(s: dict) -> str:
    if not s["figures"] and not s["skipped_figures"]:
        return ""
    lines = ["## Figures"]
    lines += [f"- `{name}`: {fig['description']} ({', '.join(fig['files'])})" for name, fig in s["figures"].items()]
    lines += [f"- `{name}` skipped: {reason}" for name, reason in s["skipped_figures"].items()]
    return "\n".join(lines)


def skipped_part(s: dict) -> str:
    if not s["skipped"]:
        return ""
    return "\n".join(["## Analyses skipped"] + [f"- **{k}**: {v}" for k, v in s["skipped"].items()])


def warnings_part(s: dict) -> str:
    lines = [f"- {name}: {w}" for name, res in s["results"].items() for w in res.warnings]
    return "\n".join(["## Warnings"] + lines) if lines else ""


def treatment_part(s: dict) -> str:
    return "\n".join(["## How runs were counted"] + [f"- {k}: {v}" for k, v in s["treatment"].items()])

