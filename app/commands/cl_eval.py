"""`kws cl-eval`: continual learning of new words (CWR*, latent replay, baselines) on real speech."""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cl-eval", help="new-classes continual-learning evaluation (CWR*, latent replay, ...)",
        description="Start from a trained model (its bundle), enrol new words experience by "
                    "experience, and after each one measure accuracy on the old classes, the "
                    "new words and overall for CWR*, CWR* + 1-bit latent replay, naive head "
                    "fine-tuning and joint retraining. Writes table.md/.csv, results.json, "
                    "quant.csv (lp/hp bits study) and cl_eval.png.")
    p.add_argument("target", metavar="RUN_OR_BUNDLE",
                   help="a bundle directory (manifest.json) or a training run directory "
                        "(exported first into OUT/bundle)")
    p.add_argument("--out", required=True, help="output directory for the reports")
    p.add_argument("--source", choices=["v1", "fsdd"], default="v1",
                   help="new words: Speech Commands v1 sample words (v1) or FSDD digits (fsdd)")
    p.add_argument("--new-data", default=None,
                   help="folder of the new words (default ../shared/data/"
                        "speech_commands_v1_sample or ../shared/data/fsdd)")
    p.add_argument("--old-data", default=str(DEFAULT_DATA / "speech_commands_v2_test"),
                   help="12-class data whose speaker-disjoint test split tests the old classes")
    p.add_argument("--words", default=None,
                   help="comma list of new words in order (default: words the model does not "
                        "know, shuffled with --seed)")
    p.add_argument("--experiences", type=int, default=5, help="number of experiences (default 5)")
    p.add_argument("--words-per-experience", type=int, default=2,
                   help="new words per experience (default 2)")
    p.add_argument("--train-per-word", type=int, default=5,
                   help="examples per new word to learn from (default 5)")
    p.add_argument("--test-per-word", type=int, default=5,
                   help="held-out examples per new word, other speakers (default 5)")
    p.add_argument("--old-test-per-class", type=int, default=30,
                   help="old-class test clips per class (default 30)")
    p.add_argument("--old-train-per-class", type=int, default=20,
                   help="old-class training clips per class for the replay memory and joint "
                        "retraining (default 20)")
    p.add_argument("--memory", type=int, default=240,
                   help="replay memory capacity in samples (default 240)")
    p.add_argument("--replay-ratio", type=float, default=4.0,
                   help="replayed samples per new sample (default 4, the thesis' 1:4)")
    p.add_argument("--replay-scales", action="store_true",
                   help="store a float16 magnitude per channel beside the 1-bit latents")
    p.add_argument("--epochs", type=int, default=30, help="SGD epochs per experience (default 30)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default 0.05)")
    p.add_argument("--bits", default="8,16,32,float",
                   help="bit widths of the quantization study (lp x hp grid; default "
                        "8,16,32,float)")
    p.add_argument("--no-quant", action="store_true", help="skip the quantization study")
    p.add_argument("--run", default=None, metavar="RUN",
                   help="training run of the bundle: also retrain its last stage on new + "
                        "replayed latents (TensorFlow); default: the run the bundle's manifest "
                        "names, if it exists (or RUN_OR_BUNDLE itself when it is a run)")
    p.add_argument("--no-stage-retrain", action="store_true",
                   help="skip the last-stage retraining method even when the run is available")
    p.add_argument("--stage-epochs", type=int, default=10,
                   help="epochs of last-stage retraining per experience (default 10)")
    p.add_argument("--stage-lr", type=float, default=1e-3,
                   help="Adam learning rate of last-stage retraining (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed for word order and splits")
    p.add_argument("--backend", default="auto", choices=["auto", "lce", "litert"],
                   help="interpreter for the frozen stages")
    p.set_defaults(func=run)


def run(args) -> int:
    from bnnkws.app.cli import CLIError
    from bnnkws.deploy.bundle import BundleError
    from bnnkws.kws.evaluation.cl_eval import CLEvalConfig, CLEvalError, run as run_eval
    from bnnkws.kws.continual.cwr import parse_bits

    target = Path(args.target)
    out = Path(args.out)
    run_dir = args.run
    try:
        if (target / "manifest.json").is_file():
            bundle_dir = target
            if run_dir is None:
                import json

                src = (json.loads((target / "manifest.json").read_text()).get("source") or {})
                if src.get("run") and (Path(src["run"]) / "config.json").is_file():
                    run_dir = src["run"]
        elif (target / "config.json").is_file():
            run_dir = run_dir or str(target)
            bundle_dir = out / "bundle"
            if not (bundle_dir / "manifest.json").is_file():
                from bnnkws.deploy.export import export_bundle

                print(f"exporting {target} into {bundle_dir} ...", flush=True)
                export_bundle(bundle_dir, run_dir=target, overwrite=True)
        else:
            raise CLIError(f"{target}: neither a bundle (manifest.json) nor a run (config.json)")
        from bnnkws.deploy.enroll import BundleBackbone

        backbone = BundleBackbone(bundle_dir, backend=args.backend)
        new_data = args.new_data or str(DEFAULT_DATA / ("speech_commands_v1_sample"
                                                        if args.source == "v1" else "fsdd"))
        cfg = CLEvalConfig(
            old_data=args.old_data, new_data=new_data, source=args.source,
            words=[w.strip() for w in args.words.split(",")] if args.words else None,
            words_per_experience=args.words_per_experience, experiences=args.experiences,
            train_per_word=args.train_per_word, test_per_word=args.test_per_word,
            old_test_per_class=args.old_test_per_class,
            old_train_per_class=args.old_train_per_class, memory_size=args.memory,
            replay_ratio=args.replay_ratio, replay_scales=args.replay_scales, lr=args.lr,
            epochs=args.epochs, bits=[parse_bits(b) for b in args.bits.split(",")],
            quant_study=not args.no_quant, seed=args.seed, split_seed=backbone.bundle.split_seed,
            run_dir=None if args.no_stage_retrain else run_dir,
            stage_epochs=args.stage_epochs, stage_lr=args.stage_lr)
        result = run_eval(backbone, cfg, out, policy=backbone.policy(), target=str(bundle_dir))
    except (CLEvalError, BundleError, FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from e
    print((out / "table.md").read_text())
    print(f"wrote {out}/table.md, table.csv, quant.csv, results.json, cl_eval.png")
    return 0
