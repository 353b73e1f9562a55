"""``kws report``: regenerate the shipped model's headline table from its benchmarks.

The README's table of figures is not typed by hand: this command runs ``kws bench``, ``kws
eval`` (test and validation split; for a multi-corpus run, every corpus'), ``kws
bench-stream`` and the enrolment benchmark (``kws bench-enroll`` when it exists, else ``kws
cl-eval``) on a bundle, each as its own ``kws`` process so it is exactly the command a user
would type, and writes

    docs/shipped_model.json   every figure, the commands, the machine, and the SHA-256 of the
                              bundle's manifest.json (which hashes every file of the bundle)
    docs/shipped_model.md     the table, the commands that produced it, the machine
    docs/shipped_model.png    the accuracy / average exit / MACs versus delta plot of kws eval

and replaces the part of README.md between ``README_BEGIN`` and ``README_END`` with
:func:`table_markdown` of that JSON. ``tests/test_docs_report.py`` checks that the README's part
equals what the JSON renders to and that the JSON's manifest hash is the shipped bundle's, so a
re-shipped model cannot keep stale figures.

Steps that need something this checkout lacks (a subcommand or option another change adds, a
float-32 twin in a lean bundle) are not silently dropped: their row says what is missing.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from statistics import median
from pathlib import Path

from bnnkws.app.cli import CLIError

README_BEGIN = "<!-- shipped-model-table:begin (kws report writes this part; do not edit) -->"
README_END = "<!-- shipped-model-table:end -->"
JSON_NAME = "shipped_model.json"
MD_NAME = "shipped_model.md"
PNG_NAME = "shipped_model.png"
PNG_MAX_BYTES = 150 * 1024
DEFAULT_DATA = "../shared/data/speech_commands_v2_test"
DEFAULT_NOISE = "../shared/data/speech_commands_background_noise"
SNRS = "20,10,5,0"

# The full and the quick run differ only in how much they measure, never in what.
FULL = {"runs": 200, "warmup": 20, "limit": 0, "max_clips": None, "minutes": 5.0,
        "noise_only_minutes": 30.0, "experiences": 5}
QUICK = {"runs": 30, "warmup": 5, "limit": 80, "max_clips": 80, "minutes": 1.0,
         "noise_only_minutes": 2.0, "experiences": 1}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="regenerate the shipped model's headline table (README + docs/)",
        description=(
            "Run kws bench, kws eval (test and validation split, and those of every other "
            "corpus the bundle's run trained on), kws bench-stream (by SNR and "
            "noise-only where it can) and the enrolment benchmark (kws bench-enroll if this "
            "installation has it, else kws cl-eval) "
            "on a bundle, then write DOCS/shipped_model.json (every figure, the commands, the "
            "machine and the SHA-256 of the bundle's manifest), DOCS/shipped_model.md, "
            "DOCS/shipped_model.png (accuracy and compute versus delta) and the README's table "
            f"between its markers. Steps this installation cannot run are listed in the table "
            f"as not measured, with the reason. A full run takes a few minutes on 2 cores."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("bundle", nargs="?", default=None, metavar="BUNDLE",
                   help="bundle to report on (default: the shipped app/default_bundle)")
    p.add_argument("--data", default=DEFAULT_DATA, metavar="SPEC",
                   help="12-class dataset the bundle was trained on (its test and validation "
                        "splits are scored; the split seed comes from the bundle)")
    p.add_argument("--full-bundle", default=None, metavar="DIR",
                   help="full export (`kws export` without --lean) of the same model: its "
                        "float-32 twin gives the speed-up and size ratio that a lean bundle "
                        "cannot; without it those rows say 'lean bundle: no float-32 twin'")
    p.add_argument("--noise", default=DEFAULT_NOISE, metavar="DIR",
                   help=f"noise recordings for the streams at SNRs {SNRS} dB and the "
                        f"{FULL['noise_only_minutes']:g}-minute noise-only stream (used when kws "
                        "bench-stream has --noise / --noise-only-minutes)")
    p.add_argument("--docs", default="docs", metavar="DIR",
                   help="folder for shipped_model.json/.md/.png")
    p.add_argument("--readme", default="README.md", metavar="FILE",
                   help="README whose table (between the shipped-model-table markers) is "
                        "replaced; '' to leave it alone")
    p.add_argument("--work", default="reports/shipped_model", metavar="DIR",
                   help="folder for the raw outputs of every step (bench.json, summary.json, ...)")
    p.add_argument("--quick", action="store_true",
                   help=f"a fast look while developing: {QUICK['runs']} timed runs, "
                        f"{QUICK['max_clips']} clips per split, {QUICK['minutes']:g}-minute "
                        f"streams, a short enrolment benchmark without openWakeWord; the "
                        "table says it is a quick run and `--check` refuses it")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads")
    p.add_argument("--reuse", action="store_true",
                   help="measure nothing: rebuild the JSON, Markdown, plot and README table "
                        "from the step outputs an earlier run left in --work (after a change "
                        "to how the table is worded); the figures keep that run's command and date")
    p.add_argument("--check", action="store_true",
                   help="run no benchmark: check that DOCS/shipped_model.json belongs to BUNDLE "
                        "(its manifest's SHA-256) and that the README's table is what that JSON "
                        "renders to; exit status 1 with the reasons when not")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------
# facts about the bundle and the machine
# ---------------------------------------------------------------------------------------------
def manifest_sha256(bundle) -> str:
    """SHA-256 of ``bundle/manifest.json``. The manifest lists the SHA-256 of every other file
    of the bundle, so this one hash changes whenever any part of the model does."""
    path = Path(bundle) / "manifest.json"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError as e:
        raise CLIError(f"{path}: no manifest.json (is {bundle} a bundle from `kws export`?)") from e


def same_model(bundle: Path, full: Path) -> None:
    """Refuse a --full-bundle that is not the same model: its LCE stage files must be the
    bundle's byte for byte (an export of one run is deterministic, and a lean export writes
    the same LCE stages as a full one)."""
    def lce_hashes(path):
        m = json.loads((path / "manifest.json").read_text())
        names = [n for st in m.get("stages", []) for n in (st.get("file"), st.get("features_file"))
                 if n]
        return {n: m["files"][n]["sha256"] for n in names if n in m.get("files", {})}

    a, b = lce_hashes(bundle), lce_hashes(full)
    if not a or a != b:
        differ = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))
        raise CLIError(f"--full-bundle {full}: not the same model as {bundle} (LCE stage files "
                       f"differ: {', '.join(differ) or 'none listed'}); export both from one run")


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(),
            "platform": platform.platform(), "python": platform.python_version(),
            "threads": threads}


def available_commands() -> dict[str, set[str]]:
    """{subcommand: its option strings} of this installation's ``kws``, so optional steps run
    only where the subcommand or option exists (other changes add them; see the table's
    'not measured' rows)."""
    from bnnkws.app.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {o for a in p._actions for o in a.option_strings}
            for name, p in sub.choices.items()}


# ---------------------------------------------------------------------------------------------
# running the steps
# ---------------------------------------------------------------------------------------------
class Steps:
    """Runs ``kws`` subcommands as separate processes and records their command lines; with
    ``reuse`` it only records them (their outputs are already in the work folder)."""

    def __init__(self, reuse: bool = False):
        self.commands: list[str] = []
        self.reuse = reuse

    def run(self, args: list[str]) -> None:
        shown = "kws " + shlex.join(args)
        self.commands.append(shown)
        if self.reuse:
            return
        print(f"\n$ {shown}", flush=True)
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", "bnnkws.app", *args])
        if rc != 0:
            raise CLIError(f"step failed with exit status {rc}: {shown}")
        print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CLIError(f"{path}: cannot read the step's result ({e})") from e


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _slash(xs, fmt) -> str:
    return " / ".join(fmt(x) for x in xs)


def run(args) -> int:
    from bnnkws.app.commands.listen import default_bundle_path
    from bnnkws.kws.fileio import atomic_write_json, atomic_write_text

    bundle = Path(args.bundle) if args.bundle else default_bundle_path()
    if args.check:
        problems = check_docs(Path(args.readme) if args.readme else None,
                              Path(args.docs) / JSON_NAME, bundle)
        for p in problems:
            print(f"kws report --check: {p}", file=sys.stderr)
        if not problems:
            print(f"{args.docs}/{JSON_NAME} belongs to {bundle} and "
                  f"{args.readme or 'no README'} shows its table")
        return 1 if problems else 0
    sha = manifest_sha256(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    readme = Path(args.readme) if args.readme else None
    if readme is not None:  # fail before ten minutes of benchmarks, not after
        splice_readme(_read(readme), "", readme)
    full = None
    if args.full_bundle:
        full = Path(args.full_bundle)
        manifest_sha256(full)
        same_model(bundle, full)
    from bnnkws.kws.data.spec import parse_spec

    more = other_corpora(manifest, args.data)
    for spec in more:
        if not parse_spec(spec)[1].exists():
            raise CLIError(f"{spec}: the bundle's run also trained on this corpus, whose held-out "
                           "speakers the table scores, and it is not here (run kws report where "
                           "the run's relative data paths resolve)")
    work, docs = Path(args.work), Path(args.docs)
    cmds = available_commands()
    steps = Steps(reuse=args.reuse)
    stamp = work / "report_run.json"
    if args.reuse:
        # the table is rebuilt from the outputs of an earlier measuring run: its command line,
        # date and quick flag are the ones that describe how the figures were measured
        run_info = _load_json(stamp)
        if run_info.get("manifest_sha256") != sha:
            raise CLIError(f"{stamp}: measured on another bundle than {bundle}; run without "
                           "--reuse")
    else:
        run_info = {"command": ("kws report " + shlex.join(
                        sys.argv[2:] if sys.argv[1:2] == ["report"] else sys.argv[1:])).strip(),
                    "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "quick": bool(args.quick), "manifest_sha256": sha,
                    "load_average_start": _load_average()}
    knobs = QUICK if run_info["quick"] else FULL
    thr = ["--threads", str(args.threads)]
    bundle_arg = _shown(bundle)
    figures: dict = {}

    # 1. latency (and, with a full bundle, the float-32 twin); its bench.json is also the cost
    #    of each exit for kws eval's mean latency per delta
    bench_args = ["--runs", str(knobs["runs"]), "--warmup", str(knobs["warmup"]),
                  "--data", args.data, "--limit", str(knobs["limit"]), *thr]
    steps.run(["bench", bundle_arg, "--out", str(work / "bench"), *bench_args])
    figures["bench"] = _load_json(work / "bench" / "bench.json")
    if full is not None:
        steps.run(["bench", str(full), "--out", str(work / "bench_full"), *bench_args])
        figures["bench_full"] = _load_json(work / "bench_full" / "bench.json")

    # 2. accuracy on both splits (validation is where delta was chosen)
    clip_args = ["--max-clips", str(knobs["max_clips"])] if knobs["max_clips"] else []
    for split in ("testing", "validation"):
        out = work / f"eval_{split}"
        steps.run(["eval", bundle_arg, "--data", args.data, "--split", split, "--out", str(out),
                   "--bench", str(work / "bench" / "bench.json"), "--quiet", *thr, *clip_args])
        figures[f"eval_{split}"] = _load_json(out / "summary.json")

    # 2b. a model trained on several corpora: each other corpus' own held-out speakers (their
    #     validation clips are part of what the model was chosen on)
    for i, spec in enumerate(more, 1):
        for split in ("testing", "validation"):
            out = work / f"eval_corpus{i}_{split}"
            steps.run(["eval", bundle_arg, "--data", spec, "--split", split, "--out", str(out),
                       "--quiet", *thr, *clip_args])
            figures[f"eval_corpus{i}_{split}"] = {"corpus": spec,
                                                  **_load_json(out / "summary.json")}

    # 3. a stream through the listener's path (and by SNR where bench-stream can mix noise)
    stream_args = ["bench-stream", bundle_arg, "--data", args.data, "--minutes",
                   str(knobs["minutes"]), "--seed", "0", "--out", str(work / "stream"), *thr]
    have_noise = "--noise" in cmds.get("bench-stream", set())
    if have_noise:
        stream_args += ["--noise", args.noise, "--snr", SNRS]
    if "--noise-only-minutes" in cmds.get("bench-stream", set()):
        stream_args += ["--noise-only-minutes", f"{knobs['noise_only_minutes']:g}"]
    steps.run(stream_args)
    figures["stream"] = _load_json(work / "stream" / "bench_stream.json")

    # 4. enrolment
    if "bench-enroll" in cmds:
        en = ["bench-enroll", bundle_arg, "--out", str(work / "enroll"),
              "--old-data", args.data]
        if run_info["quick"]:  # fewer test clips, a short stream, no openWakeWord
            en += ["--test-per-word", "10", "--negative-minutes", "2", "--no-openwakeword"]
        steps.run(en)
        figures["enroll"] = {"tool": "bench-enroll",
                             **_load_json(work / "enroll" / "results.json")}
    else:
        steps.run(["cl-eval", bundle_arg, "--out", str(work / "cl_eval"), "--old-data", args.data,
                   "--experiences", str(knobs["experiences"]), "--no-quant",
                   "--no-stage-retrain"])
        figures["enroll"] = {"tool": "cl-eval", **_load_json(work / "cl_eval" / "results.json")}

    if not args.reuse:
        run_info["load_average_end"] = _load_average()
        atomic_write_json(stamp, run_info)
    figs = compact(figures)
    result = {
        "bundle": {"path": _shown(bundle), "manifest_sha256": sha,
                   "created": manifest.get("created"), "source": manifest.get("source"),
                   "delta": manifest.get("delta"), "labels": manifest.get("labels")},
        "generated": run_info["generated"],
        "quick": run_info["quick"],
        "machine": machine_info(args.threads),
        "command": run_info["command"],
        "load_average": [run_info.get("load_average_start"), run_info.get("load_average_end")],
        "commands": steps.commands,
        "bench_stream_has_noise": have_noise,
        "rows": headline_rows(figs, manifest.get("delta"), have_noise),
        "figures": figs,
    }
    docs.mkdir(parents=True, exist_ok=True)
    atomic_write_json(docs / JSON_NAME, result)
    atomic_write_text(docs / MD_NAME, full_markdown(result))
    png = store_plot(work / "eval_testing" / "accuracy_vs_delta.png", docs / PNG_NAME)
    print(f"\nwritten: {docs / JSON_NAME}, {docs / MD_NAME}, {png}")
    if readme is not None:
        atomic_write_text(readme, splice_readme(_read(readme), table_markdown(result), readme))
        print(f"updated: {readme} (the table between its markers)")
    print("\n" + table_markdown(result))
    return 0


def _load_average() -> float | None:
    """The 1-minute load average: latency figures measured on a busy machine are slower, and
    the table should say so."""
    try:
        return round(os.getloadavg()[0], 1)
    except OSError:
        return None


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it (the shipped bundle
    of an editable install is then ``app/default_bundle``, not a machine's absolute path)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise CLIError(f"{path}: cannot read ({e.strerror})") from e


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------
def other_corpora(manifest: dict, data: str) -> list[str]:
    """The corpora besides ``data`` that the bundle's run trained on (its manifest's
    ``source.split.data``, a list for a multi-corpus run), each as ``kws train`` recorded it."""
    from bnnkws.kws.data.spec import same_dataset

    recorded = ((manifest.get("source") or {}).get("split") or {}).get("data")
    if not isinstance(recorded, (list, tuple)):
        return []
    return [d for d in recorded if not same_dataset(d, data)]


def headline_rows(f: dict, delta, have_noise: bool) -> list[dict]:
    """[{figure, value, source}]: the README's table, values already formatted, ``source`` the
    step whose output they come from. ``f`` is :func:`compact` of the steps' outputs, which the
    JSON stores, so a test can check that the rows follow from the stored figures. ``delta``:
    the bundle's, a number or one per exit."""
    from bnnkws.kws.policy import format_delta, same_delta

    rows = []

    def add(figure, value, source):
        rows.append({"figure": figure, "value": value, "source": source})

    have_full = "bench_full" in f
    te, va = f["eval_testing"], f["eval_validation"]
    n_te, n_va = te["num_clips"], va["num_clips"]
    acc = list(te["per_exit_accuracy"].values())
    add(f"accuracy per exit, test split ({n_te} clips of unseen speakers)",
        _slash(acc, lambda x: f"{100 * x:.1f}") + " %", "eval_testing")
    ch = te["chosen"]
    saved = f", {_pct(ch['macs_saved'])} fewer MACs" if ch.get("macs_saved") is not None else ""
    add(f"early exit at the bundle's δ = {format_delta(delta)}, test split",
        f"{_pct(ch['accuracy'])}, average exit {ch['avg_exit']:.2f}{saved}", "eval_testing")
    vch = va["chosen"]
    add(f"validation split ({n_va} clips): last exit / δ = {format_delta(delta)}",
        f"{_pct(va['last_exit_accuracy'])} / {_pct(vch['accuracy'])}", "eval_validation")
    i = 1
    while f"eval_corpus{i}_testing" in f:
        ot, ov = f[f"eval_corpus{i}_testing"], f[f"eval_corpus{i}_validation"]
        name = Path(ot["corpus"].split(":", 1)[-1]).name
        add(f"also trained on `{name}`: its test ({ot['num_clips']} clips) ; validation "
            f"({ov['num_clips']}), last exit / δ = {format_delta(delta)}",
            f"{_pct(ot['last_exit_accuracy'])} / {_pct(ot['chosen']['accuracy'])} ; "
            f"{_pct(ov['last_exit_accuracy'])} / {_pct(ov['chosen']['accuracy'])}",
            f"eval_corpus{i}_testing")
        i += 1

    b = f["bench"]
    lce = [r["lce_ms"]["median"] for r in b["exits"]]
    add("cumulative latency per exit, LCE (median)", _slash(lce, lambda x: f"{x:.2f}") + " ms",
        "bench")
    bd = (b.get("sweep") or {}).get("bundle_delta")
    w = (b.get("sweep") or {}).get("within_1pt")
    same = bool(bd and w and same_delta(w["delta"], bd["delta"]))
    if bd:
        add(f"latency at δ = {format_delta(delta)} against the last exit",
            f"{100 * bd['latency_vs_last']:.0f} % ({_ms(bd, b['sweep'])})"
            + ("; also the cheapest δ within 1 point of the last exit" if same else ""), "bench")
    if w and not same:
        add("cheapest δ within 1 point of the last exit (same clips)",
            f"δ = {w['delta']:g}: {_pct(w['accuracy'])}, {100 * w['latency_vs_last']:.0f} % of the "
            "last exit's latency", "bench")
    add("LCE model size", f"{b['sizes_mib']['lce_model']:.2f} MiB", "bench")
    fb = f.get("bench_full")
    if have_full and fb and fb.get("speedup"):
        add("speed-up over the float-32 twin, last exit",
            f"{fb['speedup']:.2f}x ({fb['exits'][-1]['float_ms']['median']:.2f} ms float-32)",
            "bench_full")
        add("size ratio float-32 / LCE", f"{fb['size_ratio']:.1f}x", "bench_full")
    else:
        add("speed-up over the float-32 twin", "not measured: lean bundle: no float-32 twin "
            "(give `--full-bundle`)", "bench")
    int8 = _int8_row(fb if have_full and fb else b)
    add("int8 twin (full-integer quantization of the float-32 twin)",
        int8 or ("not measured: the full bundle has no int8 twin" if have_full else
                 "not measured: lean bundle: no int8 twin (give `--full-bundle`)"),
        "bench_full" if have_full else "bench")

    s = f["stream"]
    bed = (s.get("settings") or {}).get("bed_snr_db")
    add(f"{s['stream_s'] / 60:.0f}-minute stream, {s['keywords']} keywords over the dataset's "
        + ("noise bed" if bed is None else f"noise bed (itself {bed:.1f} dB SNR)")
        + ": correct / wrong / missed; false accepts per hour; cost per 100 ms hop",
        f"{s['correct_pct']:.1f} / {s['wrong_pct']:.1f} / {s['missed_pct']:.1f} %; "
        f"{s['false_accepts_per_hour']:g}; {s['mean_hop_latency_ms']:.2f} ms "
        f"(real-time factor {s['processing_rtf']:.3f})", "stream")
    by_snr, noise_only = _stream_rows(s)
    if by_snr:
        add(f"the same keywords, the bed replaced by noise at {by_snr[0]}: correct; false "
            "accepts per hour; cost per hop", by_snr[1], "stream")
    else:
        add("stream in noise by SNR", "not measured: `kws bench-stream` has no --noise/--snr"
            if not have_noise else "not measured: bench_stream.json has no per-SNR rows", "stream")
    if noise_only:
        add(noise_only[0] + ": false accepts per hour; cost per hop", noise_only[1], "stream")

    e = f["enroll"]
    if e["tool"] == "cl-eval":
        last = [r for r in e["rows"] if r["method"] == "cwr"][-1]
        words = sum(len(x["words"]) for x in e["counts"]["per_experience"])
        per = e["config"]["train_per_word"]
        add(f"enrolment (CWR*, `kws cl-eval`): old classes before → after {words} new words "
            f"({per} clips each)", f"{_pct(e['base']['acc_old'])} → {_pct(last['acc_old'])}",
            "enroll")
        add("enrolment: new-word accuracy; one update",
            f"{_pct(last['acc_new'])}; {1e3 * last['update_seconds']:.0f} ms", "enroll")
        others = [r for r in e["rows"] if r["method"] != "cwr"
                  and r["experience"] == last["experience"]]
        if others:
            add(f"old classes after {words} words, other methods",
                ", ".join(f"{METHOD_TITLES.get(r['method'], r['method'])} {_pct(r['acc_old'])}"
                          for r in others), "enroll")
        add("enrolment against false triggers (`kws bench-enroll`)",
            "not measured: this installation has no `kws bench-enroll`", "enroll")
    else:
        for figure, value in _bench_enroll_rows(e):
            add(figure, value, "enroll")
    return rows


def _bench_enroll_rows(e: dict) -> list[tuple[str, str]]:
    """The headline of ``kws bench-enroll``'s results.json (issue 17): old words before and
    after, new words, the wake-word stream, cost; openWakeWord beside it when it ran."""
    m = (e.get("methods") or {}).get("replay")
    if not m:
        return [("enrolment (`kws bench-enroll`)", _enroll_summary(e))]
    rows, out = m["rows"], []
    n = len(rows) - 1
    marks = [r for r in rows[1:] if r["words"] in set((e.get("config") or {})
                                                         .get("checkpoints", [])) | {n}]
    out.append((f"enrolment (`kws bench-enroll`, 5 takes of one speaker per word, replay "
                f"memory): old words at the last exit / at δ, before → after "
                + " and ".join(str(r["words"]) for r in marks) + " new words",
                f"{_pct(rows[0]['old_last_exit'])} / {_pct(rows[0]['old_delta'])} → "
                + " and ".join(f"{_pct(r['old_last_exit'])} / {_pct(r['old_delta'])}"
                               for r in marks)))
    out.append((f"enrolment: the {n} new words on other speakers, last exit / at δ",
                f"{_pct(rows[-1]['new_last_exit'])} / {_pct(rows[-1]['new_delta'])}"))
    st = m.get("stream") or {}
    if st:
        rec = [v["recall"] for v in st.values() if v.get("recall") == v.get("recall")]
        fa = [v["fa_per_hour"] for v in st.values()]
        info = e.get("stream") or {}
        out.append((f"enrolled words in a {info.get('seconds', 0) / 60:.0f}-minute stream of "
                    f"other speech at {info.get('snr_db', 0):g} dB SNR: recall (median, "
                    "range); false accepts per hour per word (median, max)",
                    f"{_pct(median(rec))} ({_pct(min(rec))}-{_pct(max(rec))}); "
                    f"{median(fa):.1f}, {max(fa):.1f}" if rec else "no new-word events"))
    walls = [x["wall_s"] for x in m.get("enrolments", [])]
    if walls:
        out.append(("enrolment: wall time per word (median); replay memory",
                    f"{median(walls):.2f} s; {m.get('memory_bytes', 0) / 1024:.0f} KiB"))
    oww = e.get("openwakeword")
    if oww and "stream" in oww:
        words = list(oww["stream"])
        if st and all(w in st for w in words):
            out.append(("the same wake words enrolled here: recall at false accepts per hour",
                        ", ".join(f"{w} {_pct(st[w]['recall'])} at {st[w]['fa_per_hour']:.1f}"
                                  for w in words)))
        out.append(("openWakeWord's shipped models on the same stream: recall at false "
                    "accepts per hour",
                    ", ".join(f"{w} {_pct(v['recall'])} at {v['fa_per_hour']:.1f}"
                              for w, v in oww["stream"].items())))
    elif oww:
        out.append(("openWakeWord comparison", f"not measured: {oww.get('error')}"))
    return out


METHOD_TITLES = {"cwr_replay": "CWR* + 1-bit latent replay", "naive": "naive fine-tuning",
                 "joint": "joint retraining (upper bound)",
                 "replay_stage": "last stage retrained on replay"}


def _ms(bd: dict, sweep: dict) -> str:
    # the sweep's own choice: the medians of the timed runs when it has them (robust to load)
    key = sweep.get("latency_key", "mean_ms")
    return f"{bd[key]:.2f} ms per clip, average exit {bd['mean_exit']:.2f}"


def _int8_row(b: dict) -> str | None:
    """The int8 twin's figures at the last exit, when ``kws bench`` timed one (a full export
    of issue 19's `kws export` carries it)."""
    last = b["exits"][-1] if b.get("exits") else {}
    ms = last.get("int8_ms")
    ms = ms.get("median") if isinstance(ms, dict) else ms
    if ms is None:
        return None
    parts = [f"{ms:.2f} ms at the last exit"]
    ratio = last.get("lce_vs_int8") or b.get("lce_vs_int8")
    if ratio:
        parts.append(f"LCE {ratio:.2f}x faster")
    if last.get("int8_model_mib"):
        parts.append(f"{last['int8_model_mib']:.2f} MiB of model"
                     + (f" ({last['int8_size_ratio']:.1f}x the LCE model)"
                        if last.get("int8_size_ratio") else ""))
    return ", ".join(parts)


def _stream_rows(s: dict):
    """((label, value) of the streams by SNR, (label, value) of the noise-only stream), each
    None when ``kws bench-stream`` did not measure it; rows of the listener's default gate."""
    rows = s.get("rows")
    if not isinstance(rows, list) or not rows:
        return None, None
    gate = (s.get("settings") or {}).get("gate")
    rows = [r for r in rows if r.get("gate", gate) == gate and "correct_pct" in r]
    # "clean" is the stream of the rows above (the dataset's noise bed at its own gain)
    mixed = [r for r in rows if not str(r.get("stream", "")).startswith("noise only")
             and r.get("stream") != "clean"]
    only = [r for r in rows if str(r.get("stream", "")).startswith("noise only")]
    gate_note = f", gate {gate}" if gate else ""
    by_snr = noise_only = None
    if mixed:
        names = " / ".join(str(r["stream"]).replace(" dB SNR", "") for r in mixed)
        by_snr = (f"{names} dB SNR{gate_note}",
                  f"{_slash([r['correct_pct'] for r in mixed], lambda x: f'{x:.1f}')} %; "
                  f"{_slash([r['false_accepts_per_hour'] for r in mixed], lambda x: f'{x:g}')}; "
                  f"{_slash([r['mean_hop_latency_ms'] for r in mixed], lambda x: f'{x:.2f}')} ms")
    if only:
        r = only[0]
        noise_only = (f"{r['stream_s'] / 60:.0f}-minute stream of {r['stream']}{gate_note}",
                      f"{r['false_accepts_per_hour']:g}; {r['mean_hop_latency_ms']:.2f} ms "
                      f"(real-time factor {r['processing_rtf']:.3f})")
    return by_snr, noise_only


def _enroll_summary(e: dict) -> str:
    """bench-enroll's own one-line summary if it gives one, else a pointer to its report."""
    for key in ("headline", "summary_line", "summary"):
        if isinstance(e.get(key), str):
            return e[key]
    return "see the enrolment report in docs/shipped_model.md"


def compact(figures: dict) -> dict:
    """The parts of each step's output the table uses (the raw outputs stay in --work)."""
    out = {}
    for name, d in figures.items():
        if name.startswith("eval"):
            out[name] = {k: d.get(k) for k in ("per_exit_accuracy", "last_exit_accuracy",
                                               "chosen_delta", "exit_macs")}
            out[name]["chosen"] = {k: v for k, v in d["chosen"].items() if k != "exit_fractions"}
            out[name]["num_clips"] = d["models"][0]["num_clips"]
            if "corpus" in d:
                out[name]["corpus"] = d["corpus"]
        elif name.startswith("bench"):
            # everything but the kernel-option tuning log and the sweep's rows (other changes
            # add keys, e.g. an int8 twin, that the table then shows)
            out[name] = {k: v for k, v in d.items() if k not in ("tuning", "sweep")}
            sw = d.get("sweep") or {}
            out[name]["sweep"] = {k: sw.get(k) for k in ("clips", "per_exit_accuracy",
                                                         "within_1pt", "bundle_delta",
                                                         "latency_key")}
        elif name == "stream":
            out[name] = d
        elif name == "enroll" and d.get("tool") == "bench-enroll":
            out[name] = {k: d.get(k) for k in ("tool", "config", "methods", "stream",
                                               "openwakeword", "wall_seconds")}
        elif name == "enroll" and d.get("tool") == "cl-eval":
            out[name] = {"tool": "cl-eval", "base": d["base"], "rows": d["rows"],
                         "config": d["config"], "wall_seconds": d["wall_seconds"],
                         "counts": {"per_experience": [{"words": x["words"]} for x in
                                                       d["counts"]["per_experience"]]}}
        else:
            out[name] = d
    return out


def table_markdown(result: dict) -> str:
    """The README's table: a function of the JSON alone, so a test can re-render and compare."""
    m, b = result["machine"], result["bundle"]
    lines = ["| shipped model | measured |", "|---|---|"]
    lines += [f"| {r['figure']} | {r['value']} |" for r in result["rows"]]
    lines += ["", f"{'**Quick run** (fewer clips and timings): ' if result['quick'] else ''}"
              f"measured by `{result['command']}` on {result['generated'][:10]}, "
              f"{m['cpu']} ({m['cores']} cores, {m['threads']} interpreter thread"
              f"{'s' if m['threads'] != 1 else ''}{_load_note(result)}), bundle manifest SHA-256 "
              f"`{b['manifest_sha256'][:12]}`; every command and raw figure: "
              f"[docs/{MD_NAME}](docs/{MD_NAME})."]
    return "\n".join(lines) + "\n"


def _load_note(result: dict) -> str:
    load = [x for x in result.get("load_average") or [] if x is not None]
    return (f"; 1-minute load average {' -> '.join(f'{x:g}' for x in load)} during the run"
            if load else "")


def full_markdown(result: dict) -> str:
    b = result["bundle"]
    lines = ["# The shipped model, measured", "",
             f"Written by `kws report` from `{JSON_NAME}`; do not edit by hand. Bundle "
             f"`{b['path']}` (created {b['created']}, trained by run "
             f"`{(b.get('source') or {}).get('run')}`), manifest SHA-256 "
             f"`{b['manifest_sha256']}`.", "", table_markdown(result).replace(
                 f"[docs/{MD_NAME}](docs/{MD_NAME})", "below"), "",
             "## Commands", "", "```bash"] + result["commands"] + ["```", "",
             f"Machine: `{json.dumps(result['machine'])}`.", "",
             f"![accuracy and compute versus delta]({PNG_NAME})", ""]
    return "\n".join(lines)


def splice_readme(text: str, table: str, path) -> str:
    """``text`` with the part between the markers replaced by ``table``."""
    i, j = text.find(README_BEGIN), text.find(README_END)
    if i < 0 or j < i:
        raise CLIError(f"{path}: no shipped-model table markers ({README_BEGIN!r} ... "
                       f"{README_END!r}); add them where the table belongs")
    return text[: i + len(README_BEGIN)] + "\n" + table + text[j:]


def readme_table(text: str, path="README.md") -> str:
    """The README's part between the markers, as :func:`table_markdown` writes it."""
    i, j = text.find(README_BEGIN), text.find(README_END)
    if i < 0 or j < i:
        raise ValueError(f"{path}: no shipped-model table markers")
    return text[i + len(README_BEGIN) + 1: j]


def check_docs(readme: Path | None, json_path: Path, bundle: Path) -> list[str]:
    """Why the stored figures are not those of ``bundle`` ([] when they are): the JSON must
    carry the SHA-256 of the bundle's manifest, come from a full run, and render to the
    README's table (and to the table in shipped_model.md beside it)."""
    try:
        result = json.loads(json_path.read_text())
    except (OSError, ValueError) as e:
        return [f"{json_path}: cannot read ({e}); run `kws report`"]
    problems = []
    try:
        sha = manifest_sha256(bundle)
    except CLIError as e:
        return [str(e)]
    if result.get("bundle", {}).get("manifest_sha256") != sha:
        problems.append(f"{json_path} was measured on another bundle (manifest SHA-256 "
                        f"{result.get('bundle', {}).get('manifest_sha256', '?')[:12]}, "
                        f"{bundle}/manifest.json is {sha[:12]}): run `kws report` again")
    if result.get("quick"):
        problems.append(f"{json_path} comes from `kws report --quick`: publish a full run")
    try:
        derived = headline_rows(result["figures"], result["bundle"]["delta"],
                                result.get("bench_stream_has_noise", False))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        problems.append(f"{json_path}: its figures do not make a table ({e!r})")
    else:
        if derived != result.get("rows"):
            problems.append(f"{json_path}: its rows do not follow from its figures (edited by "
                            "hand?): run `kws report` again")
    table = table_markdown(result)
    md = json_path.with_name(MD_NAME)
    try:
        if table.replace(f"[docs/{MD_NAME}](docs/{MD_NAME})", "below") not in md.read_text():
            problems.append(f"{md}: its table is not the one {json_path} renders to")
    except OSError as e:
        problems.append(f"{md}: cannot read ({e.strerror})")
    if readme is not None:
        try:
            shown = readme_table(_read(readme), readme)
        except (CLIError, ValueError) as e:
            problems.append(str(e))
        else:
            if shown != table:
                problems.append(f"{readme}: the table between its markers is not the one "
                                f"{json_path} renders to (edited by hand, or a stale copy)")
    png = json_path.with_name(PNG_NAME)
    if not png.is_file() or png.stat().st_size > PNG_MAX_BYTES:
        problems.append(f"{png}: missing or larger than {PNG_MAX_BYTES // 1024} KiB")
    return problems


def store_plot(src: Path, dst: Path) -> Path:
    """Copy kws eval's delta plot into the docs, downscaled until it is under PNG_MAX_BYTES
    (the repository carries it; the plot stays readable at 100 dpi)."""
    from PIL import Image

    from bnnkws.kws.fileio import atomic_path

    if not src.is_file():
        raise CLIError(f"{src}: kws eval wrote no accuracy-versus-delta plot")
    img = Image.open(src).convert("RGB")
    scale = 1.0
    while True:
        size = (max(1, int(img.width * scale)), max(1, int(img.height * scale)))
        # an adaptive 64-colour palette keeps the plot's flat colours and cuts the bytes
        out = img.resize(size, Image.LANCZOS).quantize(colors=64)
        with atomic_path(dst, suffix=".png") as tmp:
            out.save(tmp, format="PNG", optimize=True)
        if dst.stat().st_size <= PNG_MAX_BYTES or scale < 0.3:
            return dst
        scale *= 0.8
