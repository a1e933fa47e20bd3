"""The demo's results: a table on the terminal, ``summary.json`` and a PNG figure (README's ``./demo.sh``).

    python -m segmentation.demo_report --out runs/demo --exp demo-0 --seconds 812

Reads ``<out>/log.txt`` (run names ``<exp>__p<k>--{c,i}`` and ``<exp>__oracle``, docs/method.md §9.1's
best-on-val mIoU plus the ``final=`` mIoU), every phase's pseudo-label folders
(``<out>/pseudo/<labeller>-for-<target>/<id>.npy``, H×W×2 float32: label, confidence; docs/method.md
§2.1) and the ground-truth PNGs of the unlabelled images (``<data-root>/SegmentationClassAug``), and writes

* ``summary.json``: ``baseline_miou`` (the better of the two supervised baselines), ``dmt_miou`` (the
  final phase's better model), ``oracle_miou`` (all labels), ``seconds`` (wall time), plus per-phase
  values of both models and ``pseudo_labels``: per phase and model, how right the labels it trained
  on were (:func:`label_counts`);
* ``demo.png``: mIoU per phase for both models with the baseline and the oracle as lines, the
  pseudo-label accuracy per phase (overall and on object pixels), and a grid of unlabelled images
  with their pseudo labels at phases 1, 3 and 5 (VOC palette; ignored pixels in the palette's 255
  colour, cream);

The pseudo-label accuracy is measured here, after training, from the files; training never sees the
unlabelled images' ground truth.
* the same figure into TensorBoard (``<out>/tb/<exp>__summary``).
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from segmentation.palette import voc_palette
from utils.cli import ArgumentParser
from utils.errors import UserError, run_cli
from utils.io import write_bytes_atomic, write_text_atomic
from utils.run_log import RunLogger, parse_log_line

MODELS = ("c", "i")
GRID_PHASES = (1, 3, 5)
IGNORE = 255
BACKGROUND = 0
# label_counts' entries: pixels with a ground truth (not 255), of them kept (pseudo label not 255),
# kept and right; the same three on object pixels (ground truth neither background nor 255)
COUNT_NAMES = ("valid", "kept", "right", "object", "object_kept", "object_right")


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
    labels = summary.get("pseudo_labels", {})
    rows = ["| run | model c | model i | c's labels right: all / objects | i's labels right: all / objects |",
            "|---|---|---|---|---|"]
    for k, values in summary["phases"].items():
        name = "supervised baseline (phase 0)" if k == "0" else f"DMT phase {k}"
        acc = [f"{labels[k][m]['overall']:.1f} / {labels[k][m]['object']:.1f}" if k in labels else ""
               for m in MODELS]
        rows.append(f"| {name} | {values['c']:.2f} | {values['i']:.2f} | {acc[0]} | {acc[1]} |")
    rows.append(f"| all labels (oracle) | {summary['oracle_miou']:.2f} | | | |")
    gain = summary["dmt_miou"] - summary["baseline_miou"]
    rows.append("")
    rows.append(f"baseline {summary['baseline_miou']:.2f} → DMT {summary['dmt_miou']:.2f} mIoU "
                f"({gain:+.2f}); all labels {summary['oracle_miou']:.2f}; wall time {summary['seconds'] / 60:.1f} min")
    return "\n".join(rows)


def pseudo_folder(out: Path, exp: str, phase: int) -> Path | None:
    """The folder of the labelling pass that produced model c's labels for ``phase``."""
    matches = sorted((out / "pseudo").glob(f"{exp}__p{phase - 1}--*-for-{exp}__p{phase}--c"))
    return matches[0] if matches else None


def label_counts(pseudo: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """COUNT_NAMES of one image: ``pseudo`` (H×W pseudo labels, 255 = not kept) against ``truth``
    (H×W ground truth, 255 = no truth, e.g. object boundaries). Pixels without a truth count nowhere."""
    pseudo = np.rint(pseudo).astype(np.int64)
    truth = truth.astype(np.int64)
    valid = truth != IGNORE
    kept = valid & (pseudo != IGNORE)
    right = kept & (pseudo == truth)
    obj = valid & (truth != BACKGROUND)
    return np.array([valid.sum(), kept.sum(), right.sum(), obj.sum(), (obj & kept).sum(), (obj & right).sum()],
                    dtype=np.int64)


def accuracy(counts: np.ndarray) -> dict[str, float]:
    """Percentages from summed :func:`label_counts`: ``overall`` = right / kept, ``object`` = right /
    kept on object pixels, ``kept`` = kept / valid, ``object_kept`` = kept / object pixels (NaN when
    a denominator is 0)."""
    c = dict(zip(COUNT_NAMES, (int(v) for v in counts)))

    def pct(num: int, den: int) -> float:
        return round(100.0 * num / den, 2) if den else float("nan")
    return {"overall": pct(c["right"], c["kept"]), "object": pct(c["object_right"], c["object_kept"]),
            "kept": pct(c["kept"], c["valid"]), "object_kept": pct(c["object_kept"], c["object"])}


def folder_accuracy(folder: Path, truth_dir: Path) -> dict[str, float]:
    """:func:`accuracy` of every ``<id>.npy`` in ``folder`` against ``truth_dir/<id>.png``."""
    total = np.zeros(len(COUNT_NAMES), dtype=np.int64)
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise UserError(f"{folder}: no pseudo-label files; rerun ./demo.sh to redo its labelling pass")
    for path in files:
        truth_path = truth_dir / f"{path.stem}.png"
        if not truth_path.is_file():
            raise UserError(f"{truth_path}: ground truth of pseudo-labelled image {path.stem} not found; "
                            f"pass the demo's own --data-root")
        pseudo = np.load(path)[..., 0]
        truth = np.asarray(Image.open(truth_path))
        if truth.shape != pseudo.shape:
            raise UserError(f"{path}: pseudo labels are {pseudo.shape[0]}x{pseudo.shape[1]} but {truth_path} is "
                            f"{truth.shape[0]}x{truth.shape[1]}; pass the demo's own --data-root")
        total += label_counts(pseudo, truth)
    return accuracy(total)


def pseudo_label_accuracy(out: Path, exp: str, phases: Sequence[int], truth_dir: Path) -> dict:
    """``{phase: {model: accuracy}}`` of the labels each model trained on in phases >= 1 (the
    other model's previous-phase labels, ``<exp>__p<k-1>--<other>-for-<exp>__p<k>--<model>``)."""
    result: dict[str, dict[str, dict[str, float]]] = {}
    for k in phases:
        if k == 0:
            continue
        result[str(k)] = {}
        for m in MODELS:
            folder = out / "pseudo" / f"{exp}__p{k - 1}--{other_model(m)}-for-{exp}__p{k}--{m}"
            if not folder.is_dir():
                raise UserError(f"{folder}: pseudo-label folder missing; rerun ./demo.sh to redo its labelling pass")
            result[str(k)][m] = folder_accuracy(folder, truth_dir)
    return result


def other_model(m: str) -> str:
    return MODELS[1 - MODELS.index(m)]


def colourise(label: np.ndarray) -> np.ndarray:
    return voc_palette()[label.astype(np.uint8)]


def figure(summary: dict, out: Path, exp: str, image_dir: Path, samples: int = 4):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [int(k) for k in summary["phases"]]
    fig = plt.figure(figsize=(4 + 2.2 * len(GRID_PHASES), 2.2 * samples + 0.6), constrained_layout=True)
    grid = fig.add_gridspec(samples, 2 + len(GRID_PHASES), width_ratios=[2.6, 1] + [1] * len(GRID_PHASES))
    labels = summary.get("pseudo_labels", {})
    split = max(1, samples // 2) if labels else samples
    ax = fig.add_subplot(grid[:split, 0])
    for m, style in zip(MODELS, ("o-", "s-")):
        ax.plot(phases, [summary["phases"][str(k)][m] for k in phases], style, label=f"model {m}")
    ax.axhline(summary["baseline_miou"], color="grey", ls="--", label="supervised baseline")
    ax.axhline(summary["oracle_miou"], color="black", ls=":", label="all labels")
    ax.set_xlabel("phase (0 = baseline)")
    ax.set_ylabel("val mIoU (%)")
    ax.set_xticks(phases)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("DMT on synthetic VOC")
    if labels:
        acc_ax = fig.add_subplot(grid[split:, 0])
        label_phases = [int(k) for k in labels]
        for m, colour in zip(MODELS, ("C0", "C1")):
            for key, style, what in (("overall", "o-", "all"), ("object", "s--", "objects")):
                acc_ax.plot(label_phases, [labels[str(k)][m][key] for k in label_phases], style, color=colour,
                            label=f"{m}'s labels, {what}")
        acc_ax.set_xlabel("phase")
        acc_ax.set_ylabel("pseudo labels right (% of kept)")
        acc_ax.set_xticks(label_phases)
        acc_ax.legend(loc="lower left", fontsize=7)
        acc_ax.set_title("pseudo-label accuracy (vs. hidden ground truth)", fontsize=9)
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
    p = ArgumentParser(prog="python -m segmentation.demo_report", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the demo's output folder (OUT of the script)")
    p.add_argument("--exp", required=True, help="experiment name prefix of the runs, e.g. demo-0")
    p.add_argument("--data-root", required=True, help="the VOC2012 folder of the demo's data")
    p.add_argument("--seconds", type=float, default=float("nan"), help="wall time of the whole demo")
    args = p.parse_args(argv)
    out = Path(args.out)
    data_root = Path(args.data_root)
    summary = summarise(read_results(out / "log.txt", args.exp), args.seconds)
    summary["pseudo_labels"] = pseudo_label_accuracy(out, args.exp, [int(k) for k in summary["phases"]],
                                                     data_root / "SegmentationClassAug")
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    fig = figure(summary, out, args.exp, data_root / "JPEGImages")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_bytes_atomic(out / "demo.png", buffer.getvalue())
    logger = RunLogger(out / "tb", f"{args.exp}__summary")
    logger.figure("demo/summary", fig, 0)
    for key in ("baseline_miou", "dmt_miou", "oracle_miou"):
        logger.scalar(f"demo/{key}", summary[key], 0)
    for k, per_model in summary["pseudo_labels"].items():
        for m, acc in per_model.items():
            for key in ("overall", "object"):
                logger.scalar(f"demo/pseudo_labels_right_{key}_{m}", acc[key], int(k))
    logger.close()
    print(table(summary))
    print(f"summary: {out / 'summary.json'}; figure: {out / 'demo.png'}; "
          f"TensorBoard: tensorboard --logdir {out / 'tb'}", flush=True)
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(main))
