"""The demo's results: a table on the terminal, ``summary.json`` and a PNG figure (README's ``./demo.sh``).

    python -m segmentation.demo_report --out runs/demo --exp demo-0 --seconds 812

Reads ``<out>/log.txt`` (run names ``<exp>__p<k>--{c,i}`` and ``<exp>__oracle``, docs/method.md §9.1's
best-on-val mIoU plus the ``final=`` mIoU) and the pseudo-label folders of phases 1, 3 and 5
(``<out>/pseudo/<labeller>-for-<target>/<id>.npy``, H×W×2: label, confidence) and writes

* ``summary.json``: ``baseline_miou`` (the better of the two supervised baselines), ``dmt_miou`` (the
  final phase's better model), ``oracle_miou`` (all labels), ``seconds`` (wall time), plus per-phase
  values of both models;
* ``demo.png``: mIoU per phase for both models with the baseline and the oracle as lines, and a grid
  of unlabelled images with their pseudo labels at phases 1, 3 and 5 (VOC palette; ignored pixels in
  the palette's 255 colour, cream);
* the same figure into TensorBoard (``<out>/tb/<exp>__summary``).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from segmentation.palette import voc_palette
from utils.errors import UserError, run_cli
from utils.io import write_bytes_atomic, write_text_atomic
from utils.run_log import RunLogger, parse_log_line

MODELS = ("c", "i")
GRID_PHASES = (1, 3, 5)


def read_results(log_file: Path, exp: str) -> dict[str, dict[str, float]]:
    """``{run tag: {"best": mIoU, "final": mIoU}}`` for the demo's runs in ``log_file``."""
    if not log_file.is_file():
        raise UserError(f"{log_file}: no log.txt; the demo's training runs did not finish — rerun ./demo.sh")
    results: dict[str, dict[str, float]] = {}
    for line in log_file.read_text(encoding="utf-8").splitlines():
        parsed = parse_log_line(line)
        if parsed is None or not parsed[0].startswith(exp + "__"):
            continue
        name, best, fields = parsed
        results[name[len(exp) + 2:]] = {"best": best, "final": float(fields.get("final", "nan"))}
    return results


def summarise(results: dict[str, dict[str, float]], seconds: float) -> dict:
    phases = sorted({int(tag[1:].split("--")[0]) for tag in results if tag.startswith("p")})
    missing = [f"p{k}--{m}" for k in phases for m in MODELS if f"p{k}--{m}" not in results]
    if not phases or phases[0] != 0 or "oracle" not in results or missing:
        raise UserError(f"demo results incomplete (have {sorted(results)}); rerun ./demo.sh to finish the missing runs")
    per_phase = {str(k): {m: results[f"p{k}--{m}"]["best"] for m in MODELS} for k in phases}
    last = str(phases[-1])
    return {
        "baseline_miou": max(per_phase["0"].values()),
        "dmt_miou": max(per_phase[last].values()),
        "oracle_miou": results["oracle"]["best"],
        "seconds": round(seconds, 1),
        "phases": per_phase,
        "final_iteration_miou": {tag: r["final"] for tag, r in sorted(results.items())},
    }


def table(summary: dict) -> str:
    rows = ["| run | model c | model i |", "|---|---|---|"]
    for k, values in summary["phases"].items():
        name = "supervised baseline (phase 0)" if k == "0" else f"DMT phase {k}"
        rows.append(f"| {name} | {values['c']:.2f} | {values['i']:.2f} |")
    rows.append(f"| all labels (oracle) | {summary['oracle_miou']:.2f} | |")
    gain = summary["dmt_miou"] - summary["baseline_miou"]
    rows.append("")
    rows.append(f"baseline {summary['baseline_miou']:.2f} → DMT {summary['dmt_miou']:.2f} mIoU "
                f"({gain:+.2f}); all labels {summary['oracle_miou']:.2f}; wall time {summary['seconds'] / 60:.1f} min")
    return "\n".join(rows)


def pseudo_folder(out: Path, exp: str, phase: int) -> Path | None:
    """The folder of the labelling pass that produced model c's labels for ``phase``."""
    matches = sorted((out / "pseudo").glob(f"{exp}__p{phase - 1}--*-for-{exp}__p{phase}--c"))
    return matches[0] if matches else None


def colourise(label: np.ndarray) -> np.ndarray:
    return voc_palette()[label.astype(np.uint8)]


def figure(summary: dict, out: Path, exp: str, image_dir: Path, samples: int = 4):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [int(k) for k in summary["phases"]]
    fig = plt.figure(figsize=(4 + 2.2 * len(GRID_PHASES), 2.2 * samples + 0.6), constrained_layout=True)
    grid = fig.add_gridspec(samples, 2 + len(GRID_PHASES), width_ratios=[2.6, 1] + [1] * len(GRID_PHASES))
    ax = fig.add_subplot(grid[:, 0])
    for m, style in zip(MODELS, ("o-", "s-")):
        ax.plot(phases, [summary["phases"][str(k)][m] for k in phases], style, label=f"model {m}")
    ax.axhline(summary["baseline_miou"], color="grey", ls="--", label="supervised baseline")
    ax.axhline(summary["oracle_miou"], color="black", ls=":", label="all labels")
    ax.set_xlabel("phase (0 = baseline)")
    ax.set_ylabel("val mIoU (%)")
    ax.set_xticks(phases)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("DMT on synthetic VOC")
    folders = {k: pseudo_folder(out, exp, k) for k in GRID_PHASES}
    ids = sorted(p.stem for p in folders[GRID_PHASES[0]].glob("*.npy"))[:samples] if folders[GRID_PHASES[0]] else []
    for row, sample_id in enumerate(ids):
        image = np.asarray(Image.open(image_dir / f"{sample_id}.jpg").convert("RGB"))
        cells = [("image", image)]
        for k in GRID_PHASES:
            if folders[k] is not None and (folders[k] / f"{sample_id}.npy").is_file():
                cells.append((f"phase {k} labels", colourise(np.load(folders[k] / f"{sample_id}.npy")[..., 0])))
        for col, (title, picture) in enumerate(cells, start=1):
            cell = fig.add_subplot(grid[row, col])
            cell.imshow(picture)
            cell.set_axis_off()
            if row == 0:
                cell.set_title(title, fontsize=9)
    return fig


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m segmentation.demo_report", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the demo's output folder (OUT of the script)")
    p.add_argument("--exp", required=True, help="experiment name prefix of the runs, e.g. demo-0")
    p.add_argument("--data-root", required=True, help="the VOC2012 folder of the demo's data")
    p.add_argument("--seconds", type=float, default=float("nan"), help="wall time of the whole demo")
    args = p.parse_args(argv)
    out = Path(args.out)
    summary = summarise(read_results(out / "log.txt", args.exp), args.seconds)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    fig = figure(summary, out, args.exp, Path(args.data_root) / "JPEGImages")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_bytes_atomic(out / "demo.png", buffer.getvalue())
    logger = RunLogger(out / "tb", f"{args.exp}__summary")
    logger.figure("demo/summary", fig, 0)
    for key in ("baseline_miou", "dmt_miou", "oracle_miou"):
        logger.scalar(f"demo/{key}", summary[key], 0)
    logger.close()
    print(table(summary))
    print(f"summary: {out / 'summary.json'}; figure: {out / 'demo.png'}; "
          f"TensorBoard: tensorboard --logdir {out / 'tb'}", flush=True)
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
