"""The design-space analysis shown: a short terminal summary, matplotlib PNGs and one offline HTML page holding them."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from nas.analysis.design_space import Trained
from space.files import write_atomically, written_atomically

TOP = 3  # dimensions named in the summary


def _good(dim: dict[str, Any]) -> str:
    """A dimension's good values as read: a range `5-7` or the good choices `gelu, silu`."""
    if dim["good"] is None:
        return f"too few models hold it ({dim['n']})"
    if not dim["numeric"]:
        return "good {" + ", ".join(map(str, dim["good"])) + f"}}, best {dim['best']}"
    lo, hi, best = (_number(x) for x in (*dim["good"], dim["best"]))
    return f"good {lo if lo == hi else f'{lo}-{hi}'}, best {best}"


def _number(value: Any) -> str:
    """A stepped float as its step reads (0.15, not 0.15000000000000002): 6 significant digits, trailing zeros dropped."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _study_lines(part: dict[str, Any]) -> list[str]:
    """n, best and median error, sampler, the most important dimensions of one study."""
    top = [f"{name} {dim['importance']:.2f} ({_good(dim)})" for name, dim in list(part["dimensions"].items())[:TOP] if dim["importance"] is not None]
    return [f"study {part['study']!r}: {part['n']} trained models, best error {part['best_error']:.4f}, median {part['median_error']:.4f} "
            f"(sampler: {part['sampler'] or 'not recorded'})",
            "  most important (PED-ANOVA): " + ("; ".join(top) or "none (its trials hold no sampled parameter)")]


def summary(report: dict[str, Any]) -> list[str]:
    """The terminal summary: each study's n, errors and top dimensions, the normalisation, KS, the bias warnings."""
    parts = [report] + ([report["against"]] if "against" in report else [])
    lines = [line for part in parts for line in _study_lines(part)]
    if report["normalized_refused"]:
        lines.append(report["normalized_refused"])
    else:
        lo, hi = report["flops_range"]
        left = ", ".join(f"{p['left_out_of_normalized']} of {p['study']!r}" for p in parts if p["left_out_of_normalized"])
        lines.append(f"normalised EDF: {report['bins']} log-spaced FLOPs bins over {lo / 1e9:.3g}-{hi / 1e9:.3g} GFLOPs"
                     + (f" (outside it, left out: {left})" if left else ""))
    if "ks" in report:
        ks, nks = report["ks"], report["normalized_ks"]
        lines.append(f"KS {report['study']!r} vs {report['against']['study']!r}: D {ks['statistic']:.3f}, p {ks['pvalue']:.3g}"
                     + (f"; normalised D {nks['statistic']:.3f}, p {nks['pvalue']:.3g}" if nks else ""))
    return lines + [f"warning: {w}" for part in parts for w in part["warnings"]]


def _save_small(fig: Any, path: Path, dpi: int) -> None:
    """Save as a 256-colour PNG: flat plot colours survive, and the file (embedded again in the HTML) is a third the size."""
    import matplotlib.pyplot as plt
    from PIL import Image

    drawn = io.BytesIO()
    fig.savefig(drawn, format="png", dpi=dpi)
    plt.close(fig)
    with Image.open(drawn) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    with written_atomically(path, binary=True) as out:
        small.save(out, format="png", optimize=True)


def _edf_png(report: dict[str, Any], path: Path) -> None:
    """Both studies' EDFs (solid) and normalised EDFs (dashed) on one axis, legend `n | min | mean` as pycls's."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for part, color in zip([report] + ([report["against"]] if "against" in report else []), ("C0", "C1"), strict=False):
        errors = part["errors"]
        ax.step(errors, part["edf"], where="post", color=color, label=f"{part['study']}: {len(errors)} | {min(errors):.3f} | {np.mean(errors):.3f}")
        if part["normalized_edf"] is not None:
            ax.step(errors, part["normalized_edf"], where="post", color=color, linestyle="--", label=f"{part['study']}, normalised by FLOPs")
    title = "error EDF"
    if "ks" in report:
        title += f"  (KS D {report['ks']['statistic']:.3f}, p {report['ks']['pvalue']:.3g}"
        title += f"; normalised D {nks['statistic']:.3f}, p {nks['pvalue']:.3g})" if (nks := report["normalized_ks"]) else ")"
    ax.set(xlabel="error (1 - proxy accuracy)", ylabel="cumulative fraction of models", title=title, ylim=(0, 1.02))
    ax.legend(title="n | min | mean", loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save_small(fig, path, dpi=100)


def _dimensions_png(part: dict[str, Any], sample: Trained, path: Path) -> None:
    """Error against value per dimension (scatter for numbers, a box per choice), by importance, good values marked."""
    import matplotlib.pyplot as plt

    dims = part["dimensions"]
    cols = min(4, len(dims))
    rows = math.ceil(len(dims) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, (name, dim) in zip(axes.flat, dims.items(), strict=False):
        held = [(t.params[name], e) for t, e in zip(sample.trials, sample.errors, strict=True) if name in t.params]
        values, errors = [v for v, _ in held], [e for _, e in held]
        if dim["numeric"]:
            ax.scatter(values, errors, s=10, alpha=0.6)
            if dim["good"] is not None:
                ax.axvspan(dim["good"][0], dim["good"][1], color="C2", alpha=0.2, label="good")
                ax.axvline(dim["best"], color="C2")
        else:
            choices = sorted({str(v) for v in values})
            boxes = ax.boxplot([[e for v, e in held if str(v) == c] for c in choices], patch_artist=True)
            ax.set_xticks(range(1, len(choices) + 1), choices, rotation=30, fontsize=7)
            good = {str(g) for g in dim["good"] or []}
            for box, choice in zip(boxes["boxes"], choices, strict=True):
                box.set_facecolor("C2" if choice in good else "white")
        importance = "-" if dim["importance"] is None else f"{dim['importance']:.2f}"
        # n: a conditional dimension is held by some models only; below MIN_TRIALS no good range is drawn
        ax.set_title(f"{name} (importance {importance}, n {dim['n']})", fontsize=9)
        ax.set_ylabel("error", fontsize=8)
    for ax in list(axes.flat)[len(dims) :]:
        ax.axis("off")
    fig.suptitle(f"{part['study']}: error by dimension, most important first (green: good values)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # leave the suptitle its own strip above the panels
    _save_small(fig, path, dpi=90)


def write_report(report: dict[str, Any], samples: list[Trained], out: Path) -> list[Path]:
    """The PNGs and `analysis.html` (every PNG embedded, readable offline) in `out`; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    out.mkdir(parents=True, exist_ok=True)
    pngs = [out / "edf.png"]
    captions = {pngs[0]: "Error EDFs" + (" (solid) and FLOPs-normalised EDFs (dashed)" if report["normalized_edf"] is not None else "")}
    _edf_png(report, pngs[0])
    for part, sample, name in zip([report] + ([report["against"]] if "against" in report else []), samples, ("dimensions", "dimensions_against"), strict=False):
        if part["dimensions"]:
            pngs.append(out / f"{name}.png")  # not named after the study: a study name may hold a slash
            captions[pngs[-1]] = f"Error by dimension: {part['study']}"
            _dimensions_png(part, sample, pngs[-1])
    images = "".join(f'<h2>{html.escape(captions[p])}</h2><img alt="{html.escape(captions[p])} ({p.name})" src="data:image/png;base64,'
                     f'{base64.b64encode(p.read_bytes()).decode()}">' for p in pngs)
    name = report["study"] + (f" vs {report['against']['study']}" if "against" in report else "")
    page = out / "analysis.html"
    # pre-wrap: the summary's long lines wrap in the page instead of running off its right edge
    write_atomically(page, f"<!doctype html><html><head><meta charset='utf-8'><title>convspace analysis: {html.escape(name)}</title>"
                           f"<style>body{{font-family:sans-serif;max-width:1500px;margin:auto}}img{{max-width:100%}}pre{{white-space:pre-wrap}}</style>"
                           f"</head><body><h1>Design-space analysis of {html.escape(name)}</h1><pre>{html.escape(chr(10).join(summary(report)))}</pre>"
                           f"{images}</body></html>")
    return [*pngs, page]
