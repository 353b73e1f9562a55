"""``kws eval``: evaluate training runs or exported bundles and write the early-exit report.

A run is evaluated with Keras on cached log-mel features; a bundle (a directory with
``manifest.json``) through the deployed runtime, clip by clip from the audio, so its figures are
the device's. Both feed the same report (:mod:`bnnkws.kws.evaluation.report`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from bnnkws.app.cli import CLIError, delta_arg

SPLIT_CHOICES = ("testing", "validation", "train", "all")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate runs/bundles: per-exit accuracy, delta sweep, calibration, report",
        description=(
            "Evaluate one or more training runs or exported bundles on a dataset split and write "
            "a report directory: summary.md, summary.json, CSV tables and PNG plots (per-exit "
            "accuracy, accuracy/average exit/MACs versus the exit threshold delta, where clips "
            "leave, confusion matrix, accuracy versus compute of all models). The first "
            "early-exit model given is the primary one; single-exit (E_s) runs are compared "
            "with it exit by exit."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("targets", nargs="+", metavar="RUN_OR_BUNDLE",
                   help="training run directories (with config.json) and/or exported bundles "
                        "(with manifest.json)")
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="dataset to evaluate on: a path (auto-detected) or sc:PATH, fsdd:PATH, "
                        "mswc:PATH, folder:PATH; labels are matched to the model's by name")
    p.add_argument("--out", required=True, metavar="DIR", help="report directory to write")
    p.add_argument("--split", default=None, choices=SPLIT_CHOICES,
                   help="split of the dataset to score ('all' = every clip). Default: the test "
                        "split when --data is the dataset the run or bundle recorded as its "
                        "training data, else 'all' (a dataset the model never saw has no "
                        "held-out part to pick); the report says which and why")
    p.add_argument("--task", default=None,
                   help="dataset task (12, 35/all, or a comma word list); default: the "
                        "training task on the training data, else inferred from the model's "
                        "labels, else the dataset's own classes (scored by name)")
    p.add_argument("--seed", type=int, default=None,
                   help="split seed; default: the training seed of the run, or of the bundle's "
                        "model (recorded at export), so its test split is the one it never "
                        "trained on; 0 when unknown")
    p.add_argument("--delta", type=delta_arg, default=None,
                   help="operating threshold for the confusion matrix and per-class exits, one "
                        "number or one per exit; default: the model's stored delta")
    p.add_argument("--criterion", default="entropy", choices=("entropy", "score"),
                   help="exit rule: normalised entropy < delta, or max softmax score >= delta")
    p.add_argument("--min-exit", type=int, default=None,
                   help="never leave before this exit (default: the model's min_exit)")
    p.add_argument("--calibrate", action="store_true",
                   help="fit one temperature per exit on the validation split (minimum NLL), "
                        "report ECE before/after, and store the temperatures in each run's "
                        "config.json (bundles: used for the report only)")
    p.add_argument("--budget-exit", type=float, default=None, metavar="X",
                   help="choose delta on the validation split so that the average exit is <= X")
    p.add_argument("--budget-ms", type=float, default=None, metavar="MS",
                   help="choose delta on the validation split so that the mean latency is <= MS; "
                        "needs --bench or --stage-ms")
    p.add_argument("--budget-share", type=float, default=None, metavar="F",
                   help="choose delta on the validation split so that the mean latency is <= F "
                        "times the last exit's (0.45: under half the full network's time); needs "
                        "--bench or --stage-ms")
    p.add_argument("--per-exit", action="store_true",
                   help="with a budget: choose one delta per exit (the most accurate setting on "
                        "a 0.05 grid that meets the budget) instead of one for all exits; early "
                        "heads are sure of different clips than late ones, so at the same "
                        "latency this is usually more accurate")
    p.add_argument("--validation-data", action="append", default=None, metavar="SPEC",
                   help="score the budget and --calibrate on the validation split of this "
                        "dataset instead of --data's; repeat it for a model trained on several "
                        "corpora (their validation clips together)")
    p.add_argument("--store-delta", action="store_true",
                   help="write the delta a budget chose into the run's config.json (exported "
                        "with it) or the bundle's manifest.json (used from then on)")
    p.add_argument("--bench", default=None, metavar="BENCH_JSON",
                   help="bench.json written by `kws bench` for this model: its per-exit "
                        "cumulative median LCE latency is the cost of each exit (mean latency "
                        "per delta in the report, and --budget-ms)")
    p.add_argument("--stage-ms", default=None, metavar="T1,T2,...",
                   help="measured latency of each stage in ms, comma-separated (instead of "
                        "--bench); its cumulative sums are the cost of each exit")
    p.add_argument("--max-clips", type=int, default=None, metavar="N",
                   help="score a fixed random subset of N clips (quick looks)")
    p.add_argument("--batch-size", type=int, default=128, help="clips per Keras batch (runs)")
    p.add_argument("--backend", default="auto", choices=("auto", "lce", "litert"),
                   help="interpreter for bundles")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads for bundles")
    p.add_argument("--cache-dir", default=None, help="feature cache directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


# -- targets ----------------------------------------------------------------------------------
def _kind(path: Path) -> str:
    if (path / "manifest.json").is_file():
        return "bundle"
    if (path / "config.json").is_file():
        return "run"
    if not path.exists():
        raise CLIError(f"{path}: no such run or bundle")
    raise CLIError(f"{path}: neither a training run (config.json) nor a bundle (manifest.json)")


def _bundle_config(detector):
    """A ModelConfig for a bundle: its manifest's config with the bundle's own labels (CWR*
    may have added words), temperatures and delta."""
    from bnnkws.kws.config import ModelConfig

    b = detector.bundle
    mc = b.manifest.get("model_config")
    if mc is None:
        raise CLIError(f"{b.path}/manifest.json has no model_config; re-export with `kws export`")
    cfg = ModelConfig.from_dict(mc)
    temps = list(cfg.temperatures)
    bt = b.temperatures
    for i, k in enumerate(cfg.active_exits):
        if len(bt) == cfg.num_exits:
            temps[k - 1] = bt[k - 1]
        elif len(bt) == len(cfg.active_exits):
            temps[k - 1] = bt[i]
    return cfg.replace(labels=list(detector.labels), temperatures=temps, delta=b.delta)


def _subset(clips, n, seed):
    if n is None or len(clips) <= n:
        return list(clips)
    import numpy as np

    keep = np.sort(np.random.default_rng(seed).choice(len(clips), n, replace=False))
    return [clips[i] for i in keep]


class _Target:
    def __init__(self, path: Path, args, names_seen: set):
        self.path = path
        self.kind = _kind(path)
        name = path.name or str(path)
        while name in names_seen:
            name += "'"
        names_seen.add(name)
        self.name = name
        self.detector = None
        self.model = None
        if self.kind == "run":
            from bnnkws.kws.evaluation.evaluate import _load_run
            from bnnkws.kws.training.run import read_train_config, split_seed

            try:
                self.cfg, self.model = _load_run(path)
            except (FileNotFoundError, ValueError) as e:
                raise CLIError(str(e)) from e
            tc = read_train_config(path)
            recorded = {"data": tc.get("data"), "task": tc.get("task"),
                        "seed": split_seed(tc) if tc else None}
        else:
            from bnnkws.deploy.runtime import Detector

            try:
                self.detector = Detector(path, num_threads=args.threads, backend=args.backend)
            except (FileNotFoundError, ValueError, ImportError) as e:
                raise CLIError(f"{path}: {e}") from e
            self.cfg = _bundle_config(self.detector)
            recorded = dict((self.detector.bundle.manifest.get("source") or {}).get("split")
                            or {})
        self._choose_data(args, recorded)

    def _choose_data(self, args, recorded: dict) -> None:
        """Task, seed and split to score, from the options and the training data recorded in
        the run or bundle; ``split_reason`` says why for the report."""
        from bnnkws.kws.data import same_dataset
        from bnnkws.kws.evaluation.evaluate import infer_task

        self.trained_on = recorded.get("data")
        same = same_dataset(self.trained_on, args.data)
        self.seed = args.seed if args.seed is not None else int(recorded.get("seed") or 0)
        self.task_given = args.task is not None
        if self.task_given:
            self.task = args.task
        elif same and recorded.get("task"):
            self.task = recorded["task"]  # enrolled words have no folder there: scored by name
        else:
            self.task = infer_task(self.cfg.labels)
        if args.split is not None:
            self.split, self.split_reason = args.split, "chosen with --split"
        elif same:
            self.split = "testing"
            self.split_reason = (f"the model's held-out test split (seed {self.seed}) of its "
                                 f"training data")
        elif self.trained_on:
            self.split = "all"
            self.split_reason = (f"every clip: this is not the data the model trained on "
                                 f"({self.trained_on})")
        else:
            self.split = "testing"
            self.split_reason = (f"the test split of seed {self.seed}: the model records no "
                                 f"training data, so it may have seen the other splits")

    def evaluate(self, clips, split, args, cfg=None):
        from bnnkws.kws.evaluation.evaluate import EvalError
        from bnnkws.kws.policy import PolicyError

        try:
            return self._evaluate(clips, split, args, cfg)
        except (EvalError, PolicyError) as e:
            raise CLIError(f"{self.path}: {e}") from e

    def _evaluate(self, clips, split, args, cfg=None):
        from bnnkws.kws.evaluation import evaluate as ev

        cfg = cfg or self.cfg
        if self.kind == "run":
            return ev.evaluate_run(self.path, clips, name=self.name, split=split,
                                   batch_size=args.batch_size, cache_dir=args.cache_dir,
                                   progress=not args.quiet, model=self.model, cfg=cfg)
        import numpy as np

        from bnnkws.kws.features.cache import read_clip

        det = self.detector
        fcfg = det.bundle.frontend
        bad = []

        def provide(batch):
            out = []
            for c in batch:
                try:
                    y = read_clip(c, fcfg)
                except ValueError as e:  # unreadable: score nothing, say which
                    bad.append((c.path, str(e)))
                    y = np.zeros(fcfg.clip_samples, np.float32)
                out.append(det.exit_logits(audio=y))
            return np.stack(out)

        res = ev.evaluate_clips(self.name, cfg, clips, provide, split=split, kind="bundle",
                                source=self.path, batch_size=32, progress=not args.quiet)
        if bad:
            drop = {p for p, _ in bad}
            keep = np.array([p not in drop for p in res.paths])
            res.logits, res.labels = res.logits[keep], res.labels[keep]
            res.paths = [p for p, k in zip(res.paths, keep) if k]
            res.notes.append(f"{len(bad)} unreadable clips skipped, e.g. {bad[0][0]}: {bad[0][1]}")
        res.notes.append(f"evaluated through the deployed runtime ({det.backend} backend)")
        return res


def _bench_latency(path: Path) -> list:
    """Cumulative median latency (ms) per exit from a `kws bench` bench.json."""
    try:
        res = json.loads(path.read_text())
        rows = sorted(res["exits"], key=lambda r: int(r["exit"]))
        return [float(r["lce_ms"]["median"]) for r in rows]
    except FileNotFoundError:
        raise CLIError(f"--bench {path}: no such file") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CLIError(f"--bench {path}: not a bench.json from `kws bench` ({e})") from None


# -- main -------------------------------------------------------------------------------------
def run(args) -> int:
    import numpy as np

    from bnnkws.kws.evaluation import calibration as cal
    from bnnkws.kws import data as kdata
    from bnnkws.kws import policy
    from bnnkws.kws.evaluation import report

    budgets = [b for b in ("budget_exit", "budget_ms", "budget_share")
               if getattr(args, b) is not None]  # the budget options given
    if len(budgets) > 1:
        raise CLIError("give one of --budget-exit, --budget-ms and --budget-share")
    for b in ("budget_ms", "budget_share"):
        if getattr(args, b) is not None and not (args.stage_ms or args.bench):
            raise CLIError(f"--{b.replace('_', '-')} needs --bench BENCH_JSON (from `kws bench`) "
                           f"or --stage-ms")
    if args.budget_share is not None and not 0 < args.budget_share <= 1:
        raise CLIError(f"--budget-share {args.budget_share:g}: a fraction in (0, 1]")
    if args.stage_ms and args.bench:
        raise CLIError("give --bench or --stage-ms, not both")
    if args.delta is not None and budgets:
        raise CLIError("--delta and a budget both choose delta; give one")
    if (args.per_exit or args.store_delta) and not budgets:
        raise CLIError("--per-exit and --store-delta go with a budget (--budget-exit, "
                       "--budget-ms or --budget-share)")
    if args.per_exit and args.criterion != "entropy":
        raise CLIError("--per-exit chooses entropy thresholds; it needs --criterion entropy")
    cum_ms = None  # cumulative latency of leaving at exit 1..E
    if args.stage_ms:
        try:
            stage_ms = [float(x) for x in args.stage_ms.split(",") if x.strip()]
        except ValueError as e:
            raise CLIError(f"--stage-ms {args.stage_ms!r}: {e}") from e
        import itertools

        cum_ms = list(itertools.accumulate(stage_ms))
    elif args.bench:
        cum_ms = _bench_latency(Path(args.bench))

    seen: set = set()
    targets = [_Target(Path(t), args, seen) for t in args.targets]

    datasets = {}

    def load(t):
        """The dataset for target t. A task inferred from the model's labels may name words
        the data has no folder for (e.g. a folder of only enrolled words): the dataset's own
        classes are then scored, matched to the model's labels by name."""
        key = (t.task, t.seed)
        if key not in datasets:
            try:
                datasets[key] = kdata.load_dataset(args.data, task=t.task, seed=t.seed)
            except (FileNotFoundError, ValueError) as e:
                if t.task_given or t.task is None:
                    raise CLIError(f"--data {args.data}: {e}") from e
                notes.append(f"{t.name}: task {t.task} does not fit {args.data} ({e}); scored "
                             f"the dataset's own classes by name")
                t.task = None
                return load(t)
        return datasets[key]

    def split_clips(t, split):
        ds = load(t)
        task, seed = t.task, t.seed
        clips = list(ds.clips) if split == "all" else list(ds.split(split))
        if not clips:
            raise CLIError(f"--data {args.data}: the {split} split is empty "
                           f"(task {task}, seed {seed}); try --split all")
        return ds, clips

    def validation(t, cfg):
        """The clips the budget and the temperatures are fitted on: --data's validation split,
        or that of every --validation-data corpus together (scored by label name)."""
        if not args.validation_data:
            _, vclips = split_clips(t, "validation")
            return t.evaluate(_subset(vclips, args.max_clips, t.seed), "validation", args, cfg)
        parts = []
        for spec in args.validation_data:
            try:
                vds = kdata.load_dataset(spec, task=t.task, seed=t.seed)
            except (FileNotFoundError, ValueError) as e:
                raise CLIError(f"--validation-data {spec}: {e}") from e
            vclips = _subset(list(vds.split("validation")), args.max_clips, t.seed)
            if not vclips:
                raise CLIError(f"--validation-data {spec}: its validation split is empty "
                               f"(task {t.task}, seed {t.seed})")
            parts.append(t.evaluate(vclips, "validation", args, cfg))
        return dataclasses.replace(
            parts[0], logits=np.concatenate([v.logits for v in parts]),
            labels=np.concatenate([v.labels for v in parts]),
            paths=[p for v in parts for p in v.paths])

    need_val = args.calibrate or bool(budgets)
    results, calib, deltas, notes = [], {}, {}, []
    data_info = {}
    for t in targets:
        ds, clips = split_clips(t, t.split)
        n_split = len(clips)
        clips = _subset(clips, args.max_clips, t.seed)
        data_info = {"name": ds.name or args.data, "spec": args.data, "split": t.split,
                     "split_reason": t.split_reason, "trained_on": t.trained_on,
                     "task": t.task, "seed": t.seed, "clips_in_split": n_split,
                     "clips_used": len(clips)}
        cfg = t.cfg
        val = None
        if need_val:
            val = validation(t, cfg)
        if args.calibrate:
            temps = cal.fit_temperatures(val.logits, val.labels)
            lo, hi = (float(np.exp(b)) for b in cal.LOG_T_BOUNDS)
            edge = [f"exit{k}" for k, tk in zip(cfg.active_exits, temps)
                    if tk > 0.99 * hi or tk < 1.01 * lo]
            if edge:
                notes.append(f"{t.name}: the temperature of {', '.join(edge)} reached the search "
                             f"bound [{lo:g}, {hi:g}]: the exit is barely better than chance on "
                             f"the validation split (a flat softmax fits it best)")
            new = list(cfg.temperatures)
            for k, tk in zip(cfg.active_exits, temps):
                new[k - 1] = tk
            cfg = cfg.replace(temperatures=new)
            if t.kind == "run":
                cal.store_temperatures(t.path / "config.json", temps, cfg.active_exits)
                notes.append(f"{t.name}: temperatures {[round(x, 3) for x in temps]} fitted on "
                             f"{len(val.labels)} validation clips and saved to "
                             f"{t.path / 'config.json'}")
            else:
                notes.append(f"{t.name}: bundle temperatures not changed (bundles are signed); "
                             f"calibrate the run and re-export to deploy them")
        res = t.evaluate(clips, t.split, args, cfg)
        if args.calibrate:
            calib[t.name] = cal.calibrate_exits(res.logits, res.labels, res.exit_names,
                                                fit_on=(val.logits, val.labels))
        lat = None
        if cum_ms is not None:
            if len(cum_ms) < max(cfg.active_exits):
                raise CLIError(f"{args.bench or '--stage-ms'}: {len(cum_ms)} latencies, "
                               f"{t.name} has {cfg.num_exits} exits")
            lat = [cum_ms[k - 1] for k in cfg.active_exits]
            res.latency_ms = lat
        if budgets and res.is_multi_exit:
            target_ms = args.budget_ms
            if args.budget_share is not None:
                target_ms = args.budget_share * lat[-1]
            temps = [cfg.temperatures[k - 1] for k in cfg.active_exits]
            me = args.min_exit or cfg.min_exit
            try:
                if args.per_exit:
                    if len(cfg.active_exits) != cfg.num_exits:
                        raise CLIError(f"{t.name}: --per-exit needs every exit active "
                                       f"(active: {cfg.active_exits})")
                    d = policy.exit_deltas_for_budget(
                        val.logits, val.labels, args.budget_exit, target_latency=target_ms,
                        latencies=lat, normalized=cfg.entropy_normalized, min_exit=me,
                        temperatures=temps)
                else:
                    d = policy.delta_for_budget(
                        val.logits, args.budget_exit, target_latency=target_ms,
                        latencies=lat, criterion=args.criterion,
                        normalized=cfg.entropy_normalized, min_exit=me, temperatures=temps)
            except ValueError as e:
                raise CLIError(f"{t.name}: {e}") from e
            deltas[t.name] = d
            what = (f"average exit <= {args.budget_exit:g}" if args.budget_exit is not None
                    else f"mean latency <= {target_ms:.4g} ms" + (
                        f" ({args.budget_share:g} of the last exit's {lat[-1]:.4g} ms)"
                        if args.budget_share is not None else ""))
            notes.append(f"{t.name}: delta {policy.format_delta(d)} chosen on "
                         f"{len(val.labels)} validation clips for {what}")
            if args.store_delta:
                notes.append(_store_delta(t, d))
        elif args.delta is not None:
            deltas[t.name] = args.delta
        results.append(res)
        for n in res.notes:
            print(f"{t.name}: {n}")

    primary = next((r for r in results if r.is_multi_exit), results[0])
    try:
        summary = report.write_report(results, args.out, delta=deltas or None,
                                      criterion=args.criterion, min_exit=args.min_exit,
                                      calibration=calib or None, data_info=data_info,
                                      notes=notes)
    except ValueError as e:
        raise CLIError(str(e)) from e
    _print_summary(summary, primary, args.out)
    return 0


def _store_delta(t, delta) -> str:
    """Write a chosen delta where the model keeps it (a run's config.json, which `kws export`
    carries into the bundle, or a bundle's manifest.json); say where."""
    from bnnkws.kws.policy import delta_value, format_delta

    if t.kind == "run":
        from bnnkws.kws.config import ModelConfig

        f = t.path / "config.json"
        ModelConfig.load(f).replace(delta=delta_value(delta)).save(f)
        return f"{t.name}: delta {format_delta(delta)} stored in {f} (`kws export` takes it)"
    from bnnkws.deploy.bundle import write_manifest

    m = t.detector.bundle.manifest
    m["delta"] = delta_value(delta)
    write_manifest(t.path, m)
    return f"{t.name}: delta {format_delta(delta)} stored in {t.path / 'manifest.json'}"


def _print_summary(s, primary, out):
    from bnnkws.kws.policy import format_delta

    print(f"{s['model']} on {s['data'].get('name', '?')} ({s['split']}, "
          f"{len(primary.labels)} clips scored)")
    if s["data"].get("split_reason"):
        print(f"  split: {s['data']['split_reason']}")
    if s["unknown_labels"]:
        print("  not scored (labels unknown to the model): "
              + ", ".join(f"{k} {v}" for k, v in s["unknown_labels"].items()))
    print("  per-exit accuracy: " + "  ".join(f"{k} {100 * v:.2f}%"
                                             for k, v in s["per_exit_accuracy"].items()))
    if len(s["per_exit_accuracy"]) > 1:
        print("  delta   accuracy  avg exit  MACs saved")
        for r in s["sweep"]:
            if r["coarse"]:
                saved = "-" if r["macs_saved"] is None else f"{100 * r['macs_saved']:.1f}%"
                print(f"  {r['delta']:<6g}  {100 * r['accuracy']:7.2f}%  {r['avg_exit']:8.2f}  "
                      f"{saved:>10}")
        c = s["chosen"]
        print(f"  chosen delta {format_delta(s['chosen_delta'])}: {100 * c['accuracy']:.2f}%, "
              f"average exit {c['avg_exit']:.2f}")
        w = s["delta_within_1pt"]
        if w:
            print(f"  within 1 point of the last exit up to delta {w['delta']:g} "
                  f"(average exit {w['avg_exit']:.2f})")
    for n in s["notes"]:
        print(f"  note: {n}")
    print(f"report: {Path(out) / 'summary.md'}")
