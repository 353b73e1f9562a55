"""The evaluation report: per-exit accuracy, the delta sweep, exit fractions, confusion matrix,
calibration and accuracy versus compute, as Markdown + JSON + CSV + PNG in one directory.

Input is a list of :class:`~bnnkws.kws.evaluation.evaluate.ModelLogits` (whatever produced them: a
run through Keras or a bundle through the deployed runtime). The first multi-exit model is the
*primary* one (the E_m model of the paper): the sweep, exit fractions and confusion matrix are
its. Single-exit models (E_s baselines) and further early-exit models join the per-exit
accuracy chart and the accuracy-versus-compute plot and table.

Files (all written atomically)::

    summary.md  summary.json
    per_exit_accuracy.csv  sweep.csv  exit_fractions_by_class.csv  confusion.csv
    compute.csv  calibration.csv (when calibrated)
    per_exit_accuracy.png  accuracy_vs_delta.png  exit_fractions.png
    class_exit_fractions.png  confusion.png  accuracy_vs_compute.png  reliability.png

numpy + matplotlib (Agg); no TensorFlow.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from bnnkws.kws.fileio import atomic_write_bytes
from bnnkws.kws.evaluation.calibration import expected_calibration_error, reliability
from bnnkws.kws.policy import (ExitPolicy, decide_batch, delta_value, format_delta, same_delta,
                               softmax)

COARSE_DELTAS = (0.1, 0.25, 0.5, 0.75, 1.0)
FINE_STEPS = 40  # fine sweep: 0, 1/40, ..., 1 of the criterion's range


# -- numbers ----------------------------------------------------------------------------------
def per_exit_accuracy(ml) -> dict:
    """Accuracy when every clip is forced out at each exit (argmax; temperature-invariant)."""
    pred = ml.logits.argmax(axis=-1)
    return {name: float(np.mean(pred[:, i] == ml.labels)) for i, name in enumerate(ml.exit_names)}


def policy_for(ml, delta, criterion: str = "entropy", min_exit: Optional[int] = None):
    """The exit policy of a model (its temperatures and normalisation) at ``delta``.

    ``min_exit`` is an exit *number*; for the logits array it becomes a position."""
    me = ml.min_exit if min_exit is None else min_exit
    pos = 1 + sum(1 for k in ml.exit_numbers if k < me)
    pos = min(max(pos, 1), len(ml.exit_numbers))
    return ExitPolicy(delta, criterion=criterion, normalized=ml.normalized, min_exit=pos,
                      temperatures=ml.temperatures)


def sweep_point(ml, delta, criterion: str = "entropy", min_exit: Optional[int] = None) -> dict:
    """Accuracy, average exit, mean cumulative MACs and exit fractions at one delta."""
    pos, labels, _ = decide_batch(ml.logits, policy_for(ml, delta, criterion, min_exit))
    nums = np.asarray(ml.exit_numbers)[pos - 1]
    n = len(labels)
    row = {
        "delta": delta_value(delta),
        "accuracy": float(np.mean(labels == ml.labels)),
        "avg_exit": float(np.mean(nums)),
        "mean_macs": None, "mean_binary_macs": None, "mean_real_macs": None,
        "macs_saved": None,
        "exit_fractions": {name: float(np.sum(pos == i + 1) / n)
                           for i, name in enumerate(ml.exit_names)},
        "mean_latency_ms": (float(np.mean(np.asarray(ml.latency_ms, np.float64)[pos - 1]))
                            if ml.latency_ms else None),
    }
    if ml.macs:
        tot = np.asarray(ml.macs["total"], dtype=np.float64)
        row["mean_macs"] = float(np.mean(tot[pos - 1]))
        row["mean_binary_macs"] = float(np.mean(np.asarray(ml.macs["binary"])[pos - 1]))
        row["mean_real_macs"] = float(np.mean(np.asarray(ml.macs["real"])[pos - 1]))
        row["macs_saved"] = float(1.0 - row["mean_macs"] / tot[-1]) if tot[-1] > 0 else None
    return row


def sweep_deltas(ml, criterion: str = "entropy") -> list:
    """The coarse deltas plus a fine grid over the criterion's whole range, ascending."""
    top = 1.0
    if criterion == "entropy" and not ml.normalized:
        top = float(np.log(ml.logits.shape[-1]))  # entropy in nats reaches log C
    fine = np.linspace(0.0, top, FINE_STEPS + 1)
    return sorted({round(float(d), 6) for d in list(fine) + list(COARSE_DELTAS)})


def delta_within(rows: Sequence[dict], last_acc: float, points: float = 1.0,
                 criterion: str = "entropy") -> Optional[dict]:
    """The cheapest sweep row whose accuracy, and that of every costlier row, stays within
    ``points`` percentage points of the last exit (None when even the costliest is not)."""
    order = sorted(rows, key=lambda r: r["delta"], reverse=(criterion == "score"))
    best = None
    for r in order:  # from the costliest setting (delta 0 / score 1) to the cheapest
        if r["accuracy"] >= last_acc - points / 100.0 - 1e-12:
            best = r
        else:
            break
    return best


def class_exit_fractions(ml, delta, criterion="entropy", min_exit=None) -> np.ndarray:
    """(classes, exits): share of each true class's clips leaving at each exit."""
    pos, _, _ = decide_batch(ml.logits, policy_for(ml, delta, criterion, min_exit))
    c, e = len(ml.model_labels), len(ml.exit_numbers)
    out = np.full((c, e), np.nan)
    for j in range(c):
        m = ml.labels == j
        if m.any():
            out[j] = np.bincount(pos[m] - 1, minlength=e) / m.sum()
    return out


def confusion(ml, delta, criterion="entropy", min_exit=None) -> np.ndarray:
    """(true, predicted) counts with the exit rule at ``delta``."""
    _, pred, _ = decide_batch(ml.logits, policy_for(ml, delta, criterion, min_exit))
    c = len(ml.model_labels)
    return np.bincount(ml.labels * c + pred, minlength=c * c).reshape(c, c)


def ece_per_exit(ml) -> dict:
    """ECE at the model's temperatures and at T=1, per exit (15 bins)."""
    out = {}
    for i, name in enumerate(ml.exit_names):
        z = ml.logits[:, i]
        t = float(ml.temperatures[i])
        out[name] = {"temperature": t,
                     "ece": expected_calibration_error(softmax(z, t), ml.labels),
                     "ece_uncalibrated": expected_calibration_error(softmax(z), ml.labels)}
    return out


def model_summary(ml, delta, criterion="entropy", min_exit=None) -> dict:
    """Everything the report says about one model, JSON-ready."""
    acc = per_exit_accuracy(ml)
    last = acc[ml.exit_names[-1]]
    deltas = sweep_deltas(ml, criterion)
    rows = [sweep_point(ml, d, criterion, min_exit) for d in deltas]
    coarse = {round(d, 6) for d in COARSE_DELTAS}
    for r in rows:
        r["coarse"] = round(r["delta"], 6) in coarse
    chosen = sweep_point(ml, delta, criterion, min_exit)
    within = delta_within(rows, last, 1.0, criterion) if ml.is_multi_exit else None
    return {
        "name": ml.name, "kind": ml.kind, "source": ml.source, "arch": ml.arch,
        "width": ml.width, "binary": ml.binary, "single_exit": ml.single_exit,
        "exits": ml.exit_names, "num_clips": int(len(ml.labels)),
        "per_exit_accuracy": acc, "last_exit_accuracy": last,
        "exit_macs": ml.macs, "macs_note": ml.macs_note, "exit_latency_ms": ml.latency_ms,
        "temperatures": {n: float(t) for n, t in zip(ml.exit_names, ml.temperatures)},
        "criterion": criterion, "entropy_normalized": ml.normalized,
        "chosen": chosen, "sweep": rows,
        "delta_within_1pt": within,
        "ece": ece_per_exit(ml),
        "unknown_labels": dict(ml.unknown), "missing_labels": list(ml.missing_labels),
        "notes": list(ml.notes),
    }


# -- files ------------------------------------------------------------------------------------
def _atomic_write(path: Path, data) -> Path:
    return atomic_write_bytes(path, data.encode() if isinstance(data, str) else data)


def _csv(path: Path, header: Sequence[str], rows) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in r])
    return _atomic_write(path, buf.getvalue())


def _savefig(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return _atomic_write(path, buf.getvalue())


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _macs_str(x) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x / 1e6:.2f} M" if x >= 1e5 else f"{x / 1e3:.1f} k"


# -- plots ------------------------------------------------------------------------------------
def plot_per_exit_accuracy(models, path):
    plt = _plt()
    num_exits = max(m.num_exits for m in models)
    exits = np.arange(1, num_exits + 1)
    multi = [m for m in models if m.is_multi_exit]
    single = [m for m in models if not m.is_multi_exit]
    series = [(f"E_m: {m.name}", {k: a for k, a in zip(m.exit_numbers,
                                                       per_exit_accuracy(m).values())})
              for m in multi]
    if single:
        es = {}
        for m in single:
            es[m.exit_numbers[0]] = list(per_exit_accuracy(m).values())[0]
        series.append(("E_s: single-exit models", es))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * num_exits + 3), 4.2))
    width = 0.8 / max(1, len(series))
    colors = plt.get_cmap("tab10")
    for j, (label, accs) in enumerate(series):
        xs = [k for k in exits if k in accs]
        ys = [100 * accs[k] for k in xs]
        bars = ax.bar(np.array(xs) - 0.4 + width * (j + 0.5), ys, width, label=label,
                      color=colors(j))
        for b, y in zip(bars, ys):
            ax.annotate(f"{y:.1f}", (b.get_x() + b.get_width() / 2, y), ha="center",
                        va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(exits)
    ax.set_xticklabels([f"exit {k}" for k in exits])
    ax.set_xlabel("exit (stages run)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Per-exit accuracy (every clip forced out at that exit)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _savefig(fig, path)


def plot_accuracy_vs_delta(s, path, criterion):
    plt = _plt()
    rows = s["sweep"]
    d = np.array([r["delta"] for r in rows])
    acc = np.array([100 * r["accuracy"] for r in rows])
    avg = np.array([r["avg_exit"] for r in rows])
    have_macs = rows[0]["mean_macs"] is not None
    n = 3 if have_macs else 2
    fig, axes = plt.subplots(n, 1, figsize=(7.5, 2.6 * n + 0.6), sharex=True)
    co = np.array([r["coarse"] for r in rows])
    xlabel = ("delta (entropy threshold, normalised to [0, 1])"
              if criterion == "entropy" and s["entropy_normalized"]
              else "delta (entropy threshold, nats)" if criterion == "entropy"
              else "delta (minimum max-softmax score)")
    ax = axes[0]
    ax.plot(d, acc, "-", color="C0", label="early exit (fine sweep)")
    ax.plot(d[co], acc[co], "o", color="C0", label="paper deltas")
    ax.axhline(100 * s["last_exit_accuracy"], ls="--", color="k", lw=1,
               label=f"last exit only ({100 * s['last_exit_accuracy']:.1f}%)")
    ax.axhline(100 * s["last_exit_accuracy"] - 1, ls=":", color="gray", lw=1,
               label="last exit - 1 point")
    w = s["delta_within_1pt"]
    if w is not None:
        ax.axvline(w["delta"], color="C2", lw=1, label=f"within 1 pt up to delta={w['delta']:.3g}")
    ch = s.get("chosen")
    if ch is not None and np.ndim(ch["delta"]) > 0:  # one delta per exit: off this axis
        ax.axhline(100 * ch["accuracy"], ls="-.", color="C3", lw=1,
                   label=f"per-exit delta {format_delta(ch['delta'])} "
                         f"({100 * ch['accuracy']:.1f}%, average exit {ch['avg_exit']:.2f})")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{s['name']}: accuracy and compute versus delta")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot(d, avg, "-", color="C1")
    ax.plot(d[co], avg[co], "o", color="C1")
    ax.set_ylabel("average exit")
    ax.set_ylim(0.8, max(len(s["exits"]), 1) + 0.2)
    ax.grid(alpha=0.3)
    if have_macs:
        ax = axes[2]
        mm = np.array([r["mean_macs"] for r in rows]) / 1e6
        ax.plot(d, mm, "-", color="C3", label="early exit")
        ax.plot(d[co], mm[co], "o", color="C3")
        ax.axhline(s["exit_macs"]["total"][-1] / 1e6, ls="--", color="k", lw=1,
                   label="last exit only")
        ax.set_ylabel("mean MACs (millions)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(xlabel)
    fig.tight_layout()
    return _savefig(fig, path)


def plot_exit_fractions(s, path, chosen_delta):
    plt = _plt()
    rows = [r for r in s["sweep"] if r["coarse"]]
    if not any(same_delta(r["delta"], chosen_delta) for r in rows):
        if np.ndim(chosen_delta) == 0:
            rows = sorted(rows + [s["chosen"]], key=lambda r: r["delta"])
        else:  # one delta per exit: not on the sweep's axis, shown after it
            rows = rows + [s["chosen"]]
    exits = s["exits"]
    fr = np.array([[r["exit_fractions"][e] for e in exits] for r in rows]) * 100
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    cmap = plt.get_cmap("viridis")
    for i, e in enumerate(exits):
        ax.bar(x, fr[:, i], 0.6, bottom=bottom, label=e.replace("exit", "exit "),
               color=cmap(i / max(1, len(exits) - 1)))
        for xi, (b, h) in enumerate(zip(bottom, fr[:, i])):
            if h >= 6:
                ax.text(xi, b + h / 2, f"{h:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if i < len(exits) / 2 else "black")
        bottom += fr[:, i]
    ax.set_xticks(x)
    ax.set_xticklabels([format_delta(r["delta"]).replace("/", "/\n")
                        + (" *" if same_delta(r["delta"], chosen_delta) else "") for r in rows],
                       fontsize=7 if np.ndim(chosen_delta) else None)
    ax.set_xlabel("delta (* = chosen)")
    ax.set_ylabel("clips leaving at each exit (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{s['name']}: where clips leave, per delta")
    ax.legend(title="exit", bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    return _savefig(fig, path)


def plot_class_exit_fractions(s, frac, labels, path, delta):
    plt = _plt()
    exits = s["exits"]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(labels) + 1.8))
    y = np.arange(len(labels))
    left = np.zeros(len(labels))
    cmap = plt.get_cmap("viridis")
    f = np.nan_to_num(frac) * 100
    for i, e in enumerate(exits):
        ax.barh(y, f[:, i], 0.7, left=left, label=e.replace("exit", "exit "),
                color=cmap(i / max(1, len(exits) - 1)))
        left += f[:, i]
    ax.set_yticks(y)
    ax.set_yticklabels([lab + (" (no clips)" if np.isnan(frac[j]).all() else "")
                        for j, lab in enumerate(labels)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("clips of the class leaving at each exit (%)")
    ax.set_ylabel("true class")
    ax.set_title(f"{s['name']}: exit per class at delta={format_delta(delta)}")
    ax.legend(title="exit", bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    return _savefig(fig, path)


def plot_confusion(cm, labels, path, title):
    plt = _plt()
    c = len(labels)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    size = max(5.0, 0.45 * c + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm * 100, cmap="Blues", vmin=0, vmax=100)
    if c <= 40:
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class (%)")
    return _savefig(fig, path)


def plot_accuracy_vs_compute(summaries, path):
    plt = _plt()
    use_macs = all(s["exit_macs"] for s in summaries)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    scale = 1e6
    for j, s in enumerate(summaries):
        color = f"C{j % 10}"
        if len(s["exits"]) > 1:
            rows = sorted(s["sweep"], key=lambda r: r["avg_exit"])
            x = [r["mean_macs"] / scale if use_macs else r["avg_exit"] for r in rows]
            ax.plot(x, [100 * r["accuracy"] for r in rows], "-", color=color,
                    label=f"{s['name']}: early exit, delta sweep")
            per = list(s["per_exit_accuracy"].values())
            xs = ([m / scale for m in s["exit_macs"]["total"]] if use_macs
                  else [int(e[4:]) for e in s["exits"]])
            ax.plot(xs, [100 * a for a in per], "s", color=color, mfc="none",
                    label=f"{s['name']}: forced exit k")
            ch = s.get("chosen")
            if ch is not None and np.ndim(ch["delta"]) > 0:
                ax.plot([ch["mean_macs"] / scale if use_macs else ch["avg_exit"]],
                        [100 * ch["accuracy"]], "D", color=color,
                        label=f"{s['name']}: per-exit delta {format_delta(ch['delta'])}")
        else:
            x = (s["exit_macs"]["total"][0] / scale if use_macs else int(s["exits"][0][4:]))
            ax.plot([x], [100 * s["last_exit_accuracy"]], "*", ms=12, color=color,
                    label=f"{s['name']}: single exit ({s['exits'][0]})")
    ax.set_xlabel("mean MACs per clip (millions, binary + real)" if use_macs
                  else "average exit (MACs unavailable)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy versus compute, all models")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _savefig(fig, path)


def plot_reliability(ml, path):
    plt = _plt()
    e = len(ml.exit_names)
    fig, axes = plt.subplots(1, e, figsize=(2.8 * e + 0.8, 3.4), squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[0], ml.exit_names)):
        z = ml.logits[:, i]
        t = float(ml.temperatures[i])
        ax.plot([0, 100], [0, 100], ":", color="gray", lw=1)
        curves = [(1.0, "o-", "T = 1")]
        if abs(t - 1.0) > 1e-9:
            curves.append((t, "s-", f"T = {t:.2f}"))
        for temp, style, lab in curves:
            p = softmax(z, temp)
            _, acc, conf, cnt = reliability(p, ml.labels)
            m = cnt > 0
            ece = expected_calibration_error(p, ml.labels)
            ax.plot(100 * conf[m], 100 * acc[m], style, ms=3,
                    label=f"{lab} (ECE {100 * ece:.1f}%)")
        ax.set_title(name.replace("exit", "exit "))
        ax.set_xlabel("confidence (%)")
        if i == 0:
            ax.set_ylabel("accuracy (%)")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(f"{ml.name}: reliability per exit (15 bins)")
    fig.tight_layout()
    return _savefig(fig, path)


# -- the whole report -------------------------------------------------------------------------
def write_report(models: Sequence, out_dir, *, delta: Optional[float] = None,
                 criterion: str = "entropy", min_exit: Optional[int] = None,
                 calibration: Optional[dict] = None, data_info: Optional[dict] = None,
                 notes: Sequence[str] = ()) -> dict:
    """Write the report for ``models`` into ``out_dir``; returns the summary dict.

    delta: the operating point for the confusion matrix and per-class exits: one number, a
        ``{model name: delta}`` dict (e.g. per-model budget deltas), or None for each model's
        stored delta. calibration: ``{model name: [ExitCalibration...]}``
        from :func:`bnnkws.kws.evaluation.calibration.calibrate_exits`. data_info: dataset name,
        split, clip counts for the summary.
    """
    if not models:
        raise ValueError("write_report: no models")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    primary = next((m for m in models if m.is_multi_exit), models[0])

    def delta_of(m):  # a number (or one per exit) for every model, a {name: delta} dict, or stored
        if isinstance(delta, dict):
            return delta_value(delta.get(m.name, m.delta))
        return delta_value(m.delta if delta is None else delta)

    chosen = delta_of(primary)
    sums = [model_summary(m, delta_of(m), criterion, min_exit) for m in models]
    ps = sums[models.index(primary)]
    written = []

    # CSV tables
    written.append(_csv(out / "per_exit_accuracy.csv",
                        ["model", "kind", "exit", "accuracy", "cum_macs", "cum_binary_macs",
                         "cum_real_macs"],
                        [(s["name"], "E_m" if len(s["exits"]) > 1 else "E_s", e, a,
                          *(s["exit_macs"][k][i] if s["exit_macs"] else None
                            for k in ("total", "binary", "real")))
                         for s in sums for i, (e, a) in enumerate(s["per_exit_accuracy"].items())]))
    written.append(_csv(out / "sweep.csv",
                        ["model", "delta", "coarse", "accuracy", "avg_exit", "mean_macs",
                         "macs_saved", "mean_latency_ms"] + [f"frac_{e}" for e in ps["exits"]],
                        [(s["name"], r["delta"], int(r["coarse"]), r["accuracy"], r["avg_exit"],
                          r["mean_macs"], r["macs_saved"], r["mean_latency_ms"],
                          *[r["exit_fractions"].get(e) for e in ps["exits"]])
                         for s in sums if len(s["exits"]) > 1 for r in s["sweep"]]))
    frac = class_exit_fractions(primary, chosen, criterion, min_exit)
    written.append(_csv(out / "exit_fractions_by_class.csv",
                        ["label", "clips"] + primary.exit_names,
                        [(lab, int(np.sum(primary.labels == j)),
                          *[None if np.isnan(v) else float(v) for v in frac[j]])
                         for j, lab in enumerate(primary.model_labels)]))
    cm = confusion(primary, chosen, criterion, min_exit)
    written.append(_csv(out / "confusion.csv", ["true \\ predicted"] + primary.model_labels,
                        [(lab, *map(int, cm[j])) for j, lab in enumerate(primary.model_labels)]))
    compute_rows = []
    for s in sums:
        if len(s["exits"]) > 1:
            for r in s["sweep"]:
                if r["coarse"]:
                    compute_rows.append((s["name"], "E_m", f"delta={r['delta']:g}",
                                         r["accuracy"], r["avg_exit"], r["mean_macs"]))
            for i, (e, a) in enumerate(s["per_exit_accuracy"].items()):
                compute_rows.append((s["name"], "E_m", f"forced {e}", a, int(e[4:]),
                                     s["exit_macs"]["total"][i] if s["exit_macs"] else None))
        else:
            e = s["exits"][0]
            compute_rows.append((s["name"], "E_s", e, s["last_exit_accuracy"], int(e[4:]),
                                 s["exit_macs"]["total"][0] if s["exit_macs"] else None))
    written.append(_csv(out / "compute.csv",
                        ["model", "kind", "setting", "accuracy", "avg_exit", "mean_macs"],
                        compute_rows))
    if calibration:
        written.append(_csv(out / "calibration.csv",
                            ["model", "exit", "temperature", "ece_before", "ece_after",
                             "nll_before", "nll_after"],
                            [(name, c.exit, c.temperature, c.ece_before, c.ece_after,
                              c.nll_before, c.nll_after)
                             for name, cal in calibration.items() for c in cal]))

    # plots
    figs = {}
    figs["per_exit_accuracy"] = plot_per_exit_accuracy(models, out / "per_exit_accuracy.png")
    if primary.is_multi_exit:
        figs["accuracy_vs_delta"] = plot_accuracy_vs_delta(ps, out / "accuracy_vs_delta.png",
                                                           criterion)
        figs["exit_fractions"] = plot_exit_fractions(ps, out / "exit_fractions.png", chosen)
        figs["class_exit_fractions"] = plot_class_exit_fractions(
            ps, frac, primary.model_labels, out / "class_exit_fractions.png", chosen)
    figs["confusion"] = plot_confusion(
        cm, primary.model_labels, out / "confusion.png",
        f"{primary.name}: confusion at delta={format_delta(chosen)} "
        f"(accuracy {100 * ps['chosen']['accuracy']:.1f}%)")
    figs["accuracy_vs_compute"] = plot_accuracy_vs_compute(sums, out / "accuracy_vs_compute.png")
    figs["reliability"] = plot_reliability(primary, out / "reliability.png")
    written.extend(figs.values())

    summary = {
        "model": ps["name"],
        "split": primary.split,
        "criterion": criterion,
        "chosen_delta": chosen,
        "per_exit_accuracy": ps["per_exit_accuracy"],
        "last_exit_accuracy": ps["last_exit_accuracy"],
        "chosen": ps["chosen"],
        "sweep": ps["sweep"],
        "delta_within_1pt": ps["delta_within_1pt"],
        "exit_macs": ps["exit_macs"],
        "unknown_labels": ps["unknown_labels"],
        "missing_labels": ps["missing_labels"],
        "ece": ps["ece"],
        "calibration": ({name: [c.to_dict() for c in cal] for name, cal in calibration.items()}
                        if calibration else None),
        "models": sums,
        "data": data_info or {},
        "notes": list(notes),
        "files": sorted(p.name for p in written) + ["summary.json", "summary.md"],
    }
    _atomic_write(out / "summary.json", json.dumps(_jsonable(summary), indent=2) + "\n")
    _atomic_write(out / "summary.md", markdown(summary, sums, primary, figs, calibration))
    return summary


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def markdown(summary, sums, primary, figs, calibration) -> str:
    ps = next(s for s in sums if s["name"] == summary["model"])
    L = [f"# Evaluation: {ps['name']}", ""]
    d = summary["data"]
    if d:
        L.append(f"Data: **{d.get('name', '?')}**, split `{summary['split']}`, "
                 f"{ps['num_clips']} clips scored"
                 + (f" ({d['clips_in_split']} in the split)" if "clips_in_split" in d else "")
                 + "." + (f" Split: {d['split_reason']}." if d.get("split_reason") else ""))
    L.append(f"Exit rule: {summary['criterion']}"
             + (" (normalised entropy < delta)" if summary["criterion"] == "entropy"
                and ps["entropy_normalized"] else " (entropy in nats < delta)"
                if summary["criterion"] == "entropy" else " (max softmax >= delta)")
             + f"; chosen delta = {format_delta(summary['chosen_delta'])}.")
    L.append("")
    if ps["unknown_labels"]:
        n = sum(ps["unknown_labels"].values())
        L.append(f"**{n} clips not scored**: their labels are not among the model's labels: "
                 + ", ".join(f"`{k}` ({v})" for k, v in ps["unknown_labels"].items()) + ".")
        L.append("")
    if ps["missing_labels"]:
        L.append("Model labels without any clip in this split: "
                 + ", ".join(f"`{k}`" for k in ps["missing_labels"]) + ".")
        L.append("")
    ch = ps["chosen"]
    L += ["## Headline", "",
          f"- Last exit only: **{_pct(ps['last_exit_accuracy'])}**"
          + (f" at {_macs_str(ps['exit_macs']['total'][-1])} MACs" if ps["exit_macs"] else ""),
          f"- Early exit at delta={format_delta(summary['chosen_delta'])}: "
          f"**{_pct(ch['accuracy'])}**, "
          f"average exit {ch['avg_exit']:.2f}"
          + (f", mean {_macs_str(ch['mean_macs'])} MACs ({_pct(ch['macs_saved'])} saved)"
             if ch["mean_macs"] is not None else "")
          + (f", mean latency {ch['mean_latency_ms']:.3f} ms (last exit "
             f"{ps['exit_latency_ms'][-1]:.3f} ms)" if ch["mean_latency_ms"] is not None else "")]
    w = ps["delta_within_1pt"]
    if w is not None:
        L.append(f"- Accuracy stays within 1 point of the last exit up to delta={w['delta']:g}: "
                 f"{_pct(w['accuracy'])}, average exit {w['avg_exit']:.2f}"
                 + (f", {_pct(w['macs_saved'])} MACs saved" if w["macs_saved"] is not None
                    else ""))
    L.append("")

    L += ["## Per-exit accuracy (Table 2: E_m and E_s)", "",
          "| model | kind | " + " | ".join(f"exit {k}" for k in range(1, max(
              len(primary.exit_numbers), max(int(e[4:]) for s in sums for e in s["exits"])) + 1))
          + " |"]
    ncol = L[-1].count("|") - 3
    L.append("|" + "---|" * (ncol + 2))
    for s in sums:
        cells = ["-"] * ncol
        for e, a in s["per_exit_accuracy"].items():
            cells[int(e[4:]) - 1] = _pct(a)
        L.append(f"| {s['name']} | {'E_m' if len(s['exits']) > 1 else 'E_s'} | "
                 + " | ".join(cells) + " |")
    L.append("")
    if ps["exit_macs"]:
        L += ["Cumulative MACs to reach each exit: "
              + ", ".join(f"{e} {_macs_str(m)} (binary {_macs_str(b)}, real {_macs_str(r)})"
                          for e, m, b, r in zip(ps["exits"], ps["exit_macs"]["total"],
                                                ps["exit_macs"]["binary"],
                                                ps["exit_macs"]["real"])), ""]
    else:
        L += [f"*{ps['macs_note'] or 'MACs unavailable'}*", ""]

    if len(ps["exits"]) > 1:
        lat = ps["exit_latency_ms"] is not None
        L += ["## Delta sweep (Figures 2 and 4)", "",
              "| delta | accuracy | vs last exit | average exit | mean MACs | MACs saved | "
              + ("mean latency | " if lat else "") + " | ".join(ps["exits"]) + " |",
              "|" + "---|" * (6 + lat + len(ps["exits"]))]
        chosen_row = [ps["chosen"]] if np.ndim(ps["chosen"]["delta"]) > 0 else []
        for r in [r for r in ps["sweep"] if r["coarse"]] + chosen_row:
            L.append(f"| {format_delta(r['delta'])} | {_pct(r['accuracy'])} | "
                     f"{100 * (r['accuracy'] - ps['last_exit_accuracy']):+.2f} | "
                     f"{r['avg_exit']:.2f} | {_macs_str(r['mean_macs'])} | "
                     f"{_pct(r['macs_saved'])} | "
                     + (f"{r['mean_latency_ms']:.3f} ms | " if lat else "")
                     + " | ".join(f"{100 * r['exit_fractions'][e]:.0f}%"
                                  for e in ps["exits"]) + " |")
        L += ["", "The fine sweep (every 1/40 of the range) is in `sweep.csv` and "
              "`summary.json`.", ""]

    L += ["## Calibration (ECE, 15 bins)", "",
          "| exit | temperature | ECE at T | ECE at T=1 |", "|---|---|---|---|"]
    for e, v in ps["ece"].items():
        L.append(f"| {e} | {v['temperature']:.3f} | {_pct(v['ece'])} | "
                 f"{_pct(v['ece_uncalibrated'])} |")
    L.append("")
    if calibration:
        L += ["Temperatures fitted on the validation split (minimum NLL); ECE and NLL below are "
              f"measured on the `{summary['split']}` split, before (T = 1) and after:", "",
              "| model | exit | T | ECE before | ECE after | NLL before | NLL after |",
              "|---|---|---|---|---|---|---|"]
        for name, cal in calibration.items():
            for c in cal:
                L.append(f"| {name} | {c.exit} | {c.temperature:.3f} | {_pct(c.ece_before)} | "
                         f"{_pct(c.ece_after)} | {c.nll_before:.3f} | {c.nll_after:.3f} |")
        L.append("")

    if len(sums) > 1:
        L += ["## All models: accuracy versus compute", "",
              "| model | kind | accuracy (last / chosen) | average exit | mean MACs |",
              "|---|---|---|---|---|"]
        for s in sums:
            c = s["chosen"]
            L.append(f"| {s['name']} | {'E_m' if len(s['exits']) > 1 else 'E_s'} | "
                     f"{_pct(s['last_exit_accuracy'])} / {_pct(c['accuracy'])} | "
                     f"{c['avg_exit']:.2f} | {_macs_str(c['mean_macs'])} |")
        L.append("")

    captions = {
        "per_exit_accuracy": "Per-exit accuracy of the early-exit model(s) and single-exit "
                             "baselines",
        "accuracy_vs_delta": "Accuracy, average exit and mean MACs versus delta; dashed: last "
                             "exit only",
        "exit_fractions": "Share of clips leaving at each exit, per delta (Figure 3)",
        "class_exit_fractions": "Share of each class leaving at each exit at the chosen delta "
                                "(Figure 5)",
        "confusion": "Confusion matrix at the chosen delta",
        "accuracy_vs_compute": "Accuracy versus compute for every model evaluated",
        "reliability": "Reliability diagrams per exit (before/after temperature)",
    }
    L += ["## Figures", ""]
    for key, p in figs.items():
        L += [f"### {captions.get(key, key)}", "", f"![{key}]({Path(p).name})", ""]
    notes = list(summary["notes"]) + [n for s in sums for n in s["notes"]]
    if not ps["exit_macs"] and ps["macs_note"]:
        notes.append(ps["macs_note"])
    if notes:
        L += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(L)
