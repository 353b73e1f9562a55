"""Packaging a bundle for a device: ``pi`` (aarch64 Linux) or ``android`` (arm64 phone).

``pi``: the bundle, bnn-kws's own numpy-side code (``lib/bnnkws``), a runner for live detection
(``run_pi.py``, the app's ``listen`` command, and ``run_pi.py serve``, its web console), a
pip-only install (ai-edge-litert on the portable stages), a README on LCE's faster runtime
there and a per-stage benchmark script.
``android``: the bundle and an adb script that benchmarks every stage with
``lce_benchmark_model_android_arm64`` and prints per-exit cumulative latency.
Nothing here runs on the device; see the README each target gets.
"""
from __future__ import annotations

import importlib.util
import json
import platform
import shutil
from importlib import metadata
from pathlib import Path

from .bundle import MANIFEST, Bundle, now_iso, write_manifest

TEMPLATES = Path(__file__).parent / "templates"
TARGETS = ("pi", "android")
# aiohttp: the `serve` extra, so `run_pi.py serve` (the web console) runs too.
PI_REQUIREMENTS = ["numpy>=1.23,<2", "ai-edge-litert>=1.0", "sounddevice>=0.4.6", "soxr>=0.3",
                   "soundfile>=0.12", "tqdm", "aiohttp>=3.9,<4"]
# The streaming frontend's mel filterbank, computed here with librosa and shipped so the Pi
# needs no librosa (which would pull in scipy, scikit-learn and numba); run_pi.py serves it.
MEL_FILE = "mel_filterbank.npz"
PACKAGES = ("frontend", "kws", "deploy", "app")


class TargetError(ValueError):
    pass


def _lce_version() -> str:
    try:
        return metadata.version("larq-compute-engine")
    except metadata.PackageNotFoundError:
        return "0.16.0"


def _fill(text: str, **values) -> str:
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    return text


def bench_rows(b: Bundle) -> tuple[list, list]:
    """(shell lines that benchmark each exit's stages and print a table row, plain commands).

    Per stage: the LCE model, the float-32 twin and the int8 twin (when the bundle has them,
    XNNPack on for both, as a user would run them); the row carries the cumulative latency of
    each up to this exit and LCE's speed-up over each twin (0 when a twin is absent)."""
    rows, cmds = [], []
    for s in b.stages:
        rows.append(f'l=$(bench {s.file} "")')
        cmds.append(f"--graph=bundle/{s.file} --num_threads=1 --num_runs=100 --warmup_runs=10")
        for var, twin in (("f", s.float32), ("i", s.int8)):
            if twin:
                rows.append(f'{var}=$(bench {twin} "--use_xnnpack=true")')
                cmds.append(f"--graph=bundle/{twin} --num_threads=1 --num_runs=100 "
                            f"--warmup_runs=10 --use_xnnpack=true")
            else:
                rows.append(f"{var}=0")
        rows.append('cl=$(awk "BEGIN{print $cl + $l}"); cf=$(awk "BEGIN{print $cf + $f}"); '
                    'ci=$(awk "BEGIN{print $ci + $i}")')
        label = s.exit if s.exit is not None else f"(stage {s.index})"
        rows.append(f'awk -v e="{label}" -v l="$l" -v cl="$cl" -v f="$f" -v cf="$cf" '
                    '-v i="$i" -v ci="$ci" '
                    "'BEGIN{printf \"| %s | %.3f | %.3f | %.3f | %.3f | %.2fx | %.3f | %.3f "
                    "| %.2fx |\\n\", e, l/1000, cl/1000, f/1000, cf/1000, (cl>0 ? cf/cl : 0), "
                    "i/1000, ci/1000, (cl>0 ? ci/cl : 0)}'")
    return rows, cmds


def copy_code(dest: Path) -> None:
    """bnn-kws's Python sources (no TensorFlow needed at import) into ``dest/bnnkws``."""
    for pkg in PACKAGES:
        spec = importlib.util.find_spec(f"bnnkws.{pkg}")
        src = Path(spec.origin).parent
        shutil.copytree(src, dest / "bnnkws" / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "default_bundle",
                                                      "templates"))


def _find_run(run: str | None, bundle_dir: Path) -> Path | None:
    """The training run a bundle's manifest records (relative to the working directory or to
    a folder above the bundle, as for ``app/default_bundle`` -> ``runs/...``), if it exists."""
    if not run:
        return None
    p = Path(run)
    places = [p] if p.is_absolute() else [Path.cwd() / p] + [d / p for d in
                                                               bundle_dir.resolve().parents]
    return next((c for c in places if (c / "config.json").is_file()), None)


def add_portable_stages(bundle_dir, source) -> bool:
    """Give a lean bundle (``kws export --lean``: LCE stages only) its portable and float-32
    twins, converted again from the training run its manifest records. A Pi without LCE's
    Python interpreter (LCE publishes no aarch64 wheel) can only run the portable stages on
    ai-edge-litert, so a lean pi package would install and then refuse to start.

    The bundle's own LCE stages and heads are kept (enrolled words too); the run is accepted
    only if converting it again reproduces those LCE files byte for byte, i.e. it still holds
    the weights the bundle was exported from. Returns False if nothing was missing.
    """
    from .export import export_bundle

    bundle_dir = Path(bundle_dir)
    b = Bundle.load(bundle_dir)
    if all(s.portable for s in b.stages) and all(s.features_portable for s in b.stages[:1]
                                                  if s.features_file):
        return False
    src = b.manifest.get("source") or {}
    how = ("deploy the training run instead (`kws deploy RUN --target pi`) or re-export it "
           "without --lean")
    run = _find_run(src.get("run"), Path(source))
    if run is None:
        raise TargetError(
            f"{source}: lean bundle (LCE stages only, no portable/ stages). A Pi runs the "
            f"portable stages on ai-edge-litert (LCE has no aarch64 Python wheel), and the "
            f"training run this bundle came from ({src.get('run')!r}) is not here to convert "
            f"them; {how}")
    print(f"{source} is lean: converting its portable stages for ai-edge-litert from {run}")
    tmp = bundle_dir.parent / ".twins"
    try:
        fresh = export_bundle(tmp, run_dir=run, which=src.get("which") or "best", delta=b.delta,
                              include_full=False, twins=True, overwrite=True)
        fm = json.loads((fresh / MANIFEST).read_text())
        files = b.manifest["files"]
        lce = [n for s in b.stages for n in (s.file, s.features_file) if n]
        for name in lce:
            if fm["files"].get(name, {}).get("sha256") != files[name]["sha256"]:
                raise TargetError(
                    f"{run}: converting it again gives a different {name} than {source} holds "
                    f"(retrained since the export?), so its portable stages would not be this "
                    f"bundle's model; {how}")
        for entry, new in zip(b.manifest["stages"], fm["stages"]):
            for key in ("portable", "features_portable", "float32", "float32_features"):
                name = new.get(key)
                if name and not entry.get(key):
                    (bundle_dir / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(fresh / name, bundle_dir / name)
                    files[name] = fm["files"][name]
                    entry[key] = name
        # the fresh export's LCE-vs-portable check applies: its LCE files are these, byte for byte
        b.manifest["checks"] = fm.get("checks", b.manifest.get("checks"))
        b.manifest["twins_added"] = {"run": str(src.get("run")), "date": now_iso(),
                                     "by": "kws deploy --target pi"}
        write_manifest(bundle_dir, b.manifest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Bundle.load(bundle_dir)  # SHA-256 of every file, new ones included
    return True


def deploy(source, target: str, out, overwrite: bool = False, which: str = "best",
           bench_md=None) -> Path:
    """Make a device folder from a bundle (or a run, exported first)."""
    if target not in TARGETS:
        raise TargetError(f"target must be one of {TARGETS}, got {target!r}")
    source, out = Path(source), Path(out)
    if not ((source / "manifest.json").is_file() or (source / "config.json").is_file()):
        raise TargetError(f"{source}: neither a bundle (manifest.json) nor a run (config.json)")
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; choose another --out or pass --overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    try:
        return _fill_folder(source, target, out, which, bench_md)
    except BaseException:
        # a half-made device folder looks usable and is not
        shutil.rmtree(out, ignore_errors=True)
        raise


def save_filterbank(cfg, path) -> Path:
    """``cfg``'s mel filterbank (``frontend.reference.mel_matrix``) with the parameters it is for."""
    import numpy as np

    from bnnkws.frontend.reference import mel_matrix

    np.savez(path, mel=mel_matrix(cfg), sample_rate=cfg.sample_rate, n_fft=cfg.n_fft,
             n_mels=cfg.n_mels, fmin=float(cfg.fmin), fmax=float(cfg.fmax))
    return Path(path)


def _fill_folder(source: Path, target: str, out: Path, which: str, bench_md) -> Path:
    if (source / "manifest.json").is_file():
        b = Bundle.load(source)
        shutil.copytree(source, out / "bundle")
    elif (source / "config.json").is_file():
        from .export import export_bundle

        export_bundle(out / "bundle", run_dir=source, which=which)
    else:
        raise TargetError(f"{source}: neither a bundle (manifest.json) nor a run (config.json)")
    if target == "pi":
        add_portable_stages(out / "bundle", source)
    b = Bundle.load(out / "bundle")
    if bench_md and Path(bench_md).is_file():
        shutil.copy(bench_md, out / "bench.md")
    rows, cmds = bench_rows(b)
    common = dict(SOURCE=source, DATE=now_iso(), LCE_VERSION=_lce_version(),
                  MACHINE=f"{platform.machine()}, {platform.platform()}")
    if target == "pi":
        copy_code(out / "lib")
        save_filterbank(b.frontend, out / MEL_FILE)
        shutil.copy(TEMPLATES / "run_pi.py", out / "run_pi.py")
        shutil.copy(TEMPLATES / "install_pi.sh", out / "install_pi.sh")
        (out / "requirements.txt").write_text("\n".join(PI_REQUIREMENTS) + "\n")
        script = _fill((TEMPLATES / "device_bench.sh").read_text(), TARGET="pi",
                       SCRIPT="bench_device.sh", BINARY="lce_benchmark_model_aarch64",
                       LCE_VERSION=_lce_version(), SETUP=":", RUN='"$BIN"', DEV_DIR="$HERE",
                       ROWS="\n".join(rows))
        (out / "bench_device.sh").write_text(script)
        readme = _fill((TEMPLATES / "README_pi.md").read_text(), **common,
                       COMMANDS="\n".join(f"      ./lce_benchmark_model_aarch64 {c}" for c in cmds))
    else:
        dev = "/data/local/tmp/bnnkws"
        files = {f for s in b.stages for f in (s.file, s.float32, s.int8) if f}
        files |= {f for f in (b.manifest.get("full"), b.manifest.get("float32"))
                  if f and f in b.manifest["files"]}
        files = sorted(files)
        setup = "\n".join(
            [f'adb shell mkdir -p {dev}/bundle/float32 {dev}/bundle/int8',
             f'adb push "$BIN" {dev}/lce_benchmark_model >/dev/null',
             f'adb shell chmod +x {dev}/lce_benchmark_model'] +
            [f'adb push "$HERE/bundle/{f}" {dev}/bundle/{f} >/dev/null' for f in files])
        script = _fill((TEMPLATES / "device_bench.sh").read_text(), TARGET="android",
                       SCRIPT="android_bench.sh", BINARY="lce_benchmark_model_android_arm64",
                       LCE_VERSION=_lce_version(), SETUP=setup,
                       RUN=f"adb shell {dev}/lce_benchmark_model", DEV_DIR=dev,
                       ROWS="\n".join(rows))
        (out / "android_bench.sh").write_text(script)
        readme = _fill((TEMPLATES / "README_android.md").read_text(), **common, DEV_DIR=dev,
                       COMMANDS="\n".join(f"    adb shell {dev}/lce_benchmark_model "
                                          + c.replace("--graph=bundle/", f"--graph={dev}/bundle/")
                                          for c in cmds))
    (out / "README.md").write_text(readme)
    for sh in out.glob("*.sh"):
        sh.chmod(0o755)
    return out
