"""`kws features`: log-mel of a sound file with each frontend, their agreement and their speed."""
from __future__ import annotations

import argparse
from pathlib import Path

from bnnkws.app.cli import CLIError
from bnnkws.frontend.config import DFT_MODES

IMPLS = ("reference", "keras", "streaming")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "features",
        help="compute the log-mel features of a sound file, compare the frontends, time them",
        description=(
            "Read FILE (any format soundfile reads; mono-mixed, resampled to 16 kHz), compute its "
            "log-mel features (25 ms window, 10 ms hop, 64 mel bins 60-7800 Hz, 98 frames per "
            "second) and print their shape and statistics. For each implementation chosen with "
            "--impl it prints the largest difference from the numpy reference on this file and "
            "the time to extract the features of one second of audio (median of --runs runs): "
            "'reference' is numpy, 'keras' is the LogMel layer converted with Larq Compute Engine "
            "and run in the LCE TFLite interpreter (what an exported model runs on a device), "
            "'streaming' is the incremental extractor fed --chunk samples at a time."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="sound file (WAV, FLAC, OGG, ...)")
    p.add_argument("--out", metavar="X.npy", default=None,
                   help="save the reference features, float32 (frames, n_mels), to this .npy file")
    p.add_argument("--plot", metavar="X.png", default=None,
                   help="write the waveform and log-mel spectrogram to this PNG")
    p.add_argument("--impl", choices=IMPLS + ("all",), default="all",
                   help="which implementation(s) to run, compare and time")
    p.add_argument("--runs", type=int, default=100,
                   help="timed runs per implementation (the median is reported)")
    p.add_argument("--chunk", type=int, default=160,
                   help="samples per push for the streaming extractor (160 = one 10 ms hop)")
    p.add_argument("--dft", choices=DFT_MODES, default=DFT_MODES[0],
                   help="DFT inside the Keras layer: 'fourstep' = Bailey's four-step FFT as a "
                        "depthwise convolution and a matmul (the default, fastest here), 'rfft' = "
                        "TFLite's RFFT2D, 'matmul' = one matmul against a windowed cos/sin matrix")
    p.add_argument("--threads", type=int, default=1,
                   help="interpreter threads for --impl keras")
    p.set_defaults(func=run)


def _atomic_save_npy(path: Path, arr) -> None:
    import numpy as np

    from bnnkws.kws.fileio import atomic_write

    atomic_write(path, lambda f: np.save(f, arr))


def _check_out_path(value: str | None, suffix: str, option: str) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if path.suffix.lower() != suffix:
        raise CLIError(f"{option} {value}: expected a {suffix} file name")
    if not path.parent.exists():
        raise CLIError(f"{option} {value}: folder {path.parent} does not exist")
    return path


def plot_features(path: Path, y, feats, cfg, title: str) -> None:
    """Waveform above the log-mel spectrogram (time in s, mel bins labelled in Hz); atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import librosa
    import matplotlib.pyplot as plt
    import numpy as np

    sr, hop = cfg.sample_rate, cfg.hop_length
    fig, (ax_w, ax_s) = plt.subplots(
        2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [1, 3]},
        constrained_layout=True,
    )
    t = np.arange(len(y)) / sr
    ax_w.plot(t, y, lw=0.5, color="tab:blue")
    ax_w.set_ylabel("amplitude")
    ax_w.set_ylim(-1.05 * max(1e-3, np.abs(y).max()), 1.05 * max(1e-3, np.abs(y).max()))
    ax_w.set_title(title)
    # frame t covers [t*hop, t*hop + win): draw it centred on its window
    extent = [
        (cfg.win_length / 2 - hop / 2) / sr, (cfg.win_length / 2 + (len(feats) - 0.5) * hop) / sr,
        -0.5, cfg.n_mels - 0.5,
    ]
    im = ax_s.imshow(feats.T, origin="lower", aspect="auto", cmap="magma", extent=extent,
                     interpolation="nearest")
    centres = librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.fmin, fmax=cfg.fmax)[1:-1]
    ticks = np.linspace(0, cfg.n_mels - 1, 7).round().astype(int)
    ax_s.set_yticks(ticks, [f"{centres[i]:.0f}" for i in ticks])
    ax_s.set_ylabel("mel band centre (Hz)")
    ax_s.set_xlabel("time (s)")
    ax_s.set_xlim(0, len(y) / sr)
    fig.colorbar(im, ax=ax_s, label=f"log(mel power + {cfg.log_offset:g})", pad=0.01)
    from bnnkws.kws.fileio import atomic_savefig

    atomic_savefig(fig, path, dpi=110)


def run(args) -> int:
    import numpy as np

    from bnnkws.frontend import DEFAULT_FRONTEND as cfg
    from bnnkws.frontend.audio import AudioError, load_audio, pad_or_crop
    from bnnkws.frontend.bench import median_ms
    from bnnkws.frontend.reference import log_mel
    from bnnkws.frontend.streaming import StreamingLogMel

    out_path = _check_out_path(args.out, ".npy", "--out")
    plot_path = _check_out_path(args.plot, ".png", "--plot")
    if args.runs < 1:
        raise CLIError(f"--runs {args.runs}: need at least 1")
    if args.chunk < 1:
        raise CLIError(f"--chunk {args.chunk}: need at least 1 sample")
    try:
        y = load_audio(args.file, sr=cfg.sample_rate)
    except AudioError as exc:
        raise CLIError(str(exc)) from exc
    if len(y) < cfg.win_length:
        # shorter than one 25 ms window: pad so there is at least one frame to show
        y = pad_or_crop(y, cfg.win_length, crop="start")
    impls = IMPLS if args.impl == "all" else (args.impl,)

    feats = log_mel(y, cfg)
    floor = np.log(cfg.log_offset)
    print(f"{args.file}: {len(y) / cfg.sample_rate:.3f} s at {cfg.sample_rate} Hz mono")
    print(
        f"frontend: {cfg.win_length / cfg.sample_rate * 1e3:g} ms window, "
        f"{cfg.hop_length / cfg.sample_rate * 1e3:g} ms hop, n_fft {cfg.n_fft}, {cfg.n_mels} mel "
        f"{cfg.fmin:g}-{cfg.fmax:g} Hz, log offset {cfg.log_offset:g}"
    )
    print(f"features: shape {feats.shape} {feats.dtype}  min {feats.min():.3f}  max {feats.max():.3f}  "
          f"mean {feats.mean():.3f}  std {feats.std():.3f}  "
          f"at silence floor {np.mean(feats <= floor + 1e-3) * 100:.1f}%")

    # Timing uses exactly one second (clip_samples) of this file, as a model would see it.
    second = pad_or_crop(y, cfg.clip_samples, crop="start")
    rows = []
    if "reference" in impls:
        rows.append(("reference (numpy)", 0.0, median_ms(lambda: log_mel(second, cfg), args.runs)))
    if "keras" in impls:
        rows.append(_keras_row(y, second, feats, cfg, args))
    if "streaming" in impls:
        s = StreamingLogMel(cfg)
        chunks = [y[i : i + args.chunk] for i in range(0, len(y), args.chunk)]
        streamed = np.concatenate([s.push(c) for c in chunks] or [np.zeros((0, cfg.n_mels))])
        diff = float(np.abs(streamed - feats).max()) if streamed.shape == feats.shape else float("nan")
        one = [second[i : i + args.chunk] for i in range(0, len(second), args.chunk)]

        def stream_once():
            s.reset()
            for c in one:
                s.push(c)

        rows.append((f"streaming ({args.chunk}-sample chunks)", diff, median_ms(stream_once, args.runs)))

    print(f"\n{'implementation':<44} {'max |diff| vs reference':>24} {'ms per 1 s of audio':>20}")
    for name, diff, ms in rows:
        print(f"{name:<44} {diff:>24.2e} {ms:>20.3f}")
    print(f"(median of {args.runs} runs; one second = {cfg.num_frames} frames)")

    if out_path:
        _atomic_save_npy(out_path, feats)
        print(f"wrote {out_path} {feats.shape} float32")
    if plot_path:
        title = (f"{Path(args.file).name}: log-mel {feats.shape[0]} frames x {cfg.n_mels} bands "
                 f"({cfg.fmin:g}-{cfg.fmax:g} Hz, 25 ms / 10 ms)")
        plot_features(plot_path, y, feats, cfg, title)
        print(f"wrote {plot_path}")
    return 0


def _keras_row(y, second, feats, cfg, args):
    """Convert the LogMel layer with LCE and run it in the LCE interpreter."""
    import numpy as np

    from bnnkws.frontend.bench import median_ms
    from bnnkws.frontend.quiet import quiet_native_output

    print("converting the Keras LogMel layer with Larq Compute Engine ...", flush=True)
    # TensorFlow's import and the MLIR converter print pages of native log lines even on a
    # CPU-only machine; keep them out of the report (replayed if anything fails).
    with quiet_native_output():
        import tf_keras as keras
        from larq_compute_engine.tflite.python.interpreter import Interpreter

        from bnnkws.frontend.keras_layer import LogMel, convert

        def interpreter_for(n):
            audio = keras.Input((n,), batch_size=1, name="audio")
            model = keras.Model(audio, LogMel(cfg, dft=args.dft)(audio))
            return Interpreter(convert(model, "lce"), num_threads=args.threads)

        whole = interpreter_for(len(y))
        one = whole if len(y) == len(second) else interpreter_for(len(second))
    diff = float(np.abs(whole.predict(y[None, :])[0] - feats).max())
    x = second[None, :]
    ms = median_ms(lambda: one.predict(x), args.runs)
    return (f"keras LogMel ({args.dft}) in LCE interpreter", diff, ms)
