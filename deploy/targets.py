"""Packaging a bundle for a device: ``pi`` (aarch64 Linux) or ``android`` (arm64 phone).

``pi``: the bundle, bnn-kws's own numpy-side code (``lib/bnnkws``), a runner for live detection
(``run_pi.py``, the app's ``listen`` command), a pip-only install (ai-edge-litert on the portable
stages), a README on LCE's faster runtime there and a per-stage benchmark script.
``android``: the bundle and an adb script that benchmarks every stage with
``lce_benchmark_model_android_arm64`` and prints per-exit cumulative latency.
Nothing here runs on the device; see the README each target gets.
"""
from __future__ import annotations

import importlib.util
import platform
import shutil
from importlib import metadata
from pathlib import Path

from .bundle import Bundle, now_iso

TEMPLATES = Path(__file__).parent / "templates"
TARGETS = ("pi", "android")
PI_REQUIREMENTS = ["numpy>=1.23,<2", "ai-edge-litert>=1.0", "sounddevice>=0.4.6", "soxr>=0.3",
                   "soundfile>=0.12"]
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
    """(shell lines that benchmark each exit's stages and print a table row, plain commands)."""
    rows, cmds = [], []
    for i, s in enumerate(b.stages):
        lce_f = s.file
        fl_f = s.float32
        rows.append(f'l=$(bench {lce_f} "")')
        cmds.append(f"--graph=bundle/{lce_f} --num_threads=1 --num_runs=100 --warmup_runs=10")
        if fl_f:
            rows.append(f'f=$(bench {fl_f} "--use_xnnpack=true")')
            cmds.append(f"--graph=bundle/{fl_f} --num_threads=1 --num_runs=100 --warmup_runs=10 "
                        f"--use_xnnpack=true")
        else:
            rows.append("f=0")
        rows.append('cl=$(awk "BEGIN{print $cl + $l}"); cf=$(awk "BEGIN{print $cf + $f}")')
        label = s.exit if s.exit is not None else f"(stage {s.index})"
        rows.append(f'awk -v e="{label}" -v l="$l" -v cl="$cl" -v f="$f" -v cf="$cf" '
                    "'BEGIN{printf \"| %s | %.3f | %.3f | %.3f | %.3f | %.2fx |\\n\", "
                    "e, l/1000, cl/1000, f/1000, cf/1000, (cl>0 ? cf/cl : 0)}'")
    return rows, cmds


def copy_code(dest: Path) -> None:
    """bnn-kws's Python sources (no TensorFlow needed at import) into ``dest/bnnkws``."""
    for pkg in PACKAGES:
        spec = importlib.util.find_spec(f"bnnkws.{pkg}")
        src = Path(spec.origin).parent
        shutil.copytree(src, dest / "bnnkws" / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "default_bundle",
                                                      "templates"))


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
    if (source / "manifest.json").is_file():
        b = Bundle.load(source)
        shutil.copytree(source, out / "bundle")
    elif (source / "config.json").is_file():
        from .export import export_bundle

        export_bundle(out / "bundle", run_dir=source, which=which)
    else:
        raise TargetError(f"{source}: neither a bundle (manifest.json) nor a run (config.json)")
    b = Bundle.load(out / "bundle")
    if bench_md and Path(bench_md).is_file():
        shutil.copy(bench_md, out / "bench.md")
    rows, cmds = bench_rows(b)
    common = dict(SOURCE=source, DATE=now_iso(), LCE_VERSION=_lce_version(),
                  MACHINE=f"{platform.machine()}, {platform.platform()}")
    if target == "pi":
        copy_code(out / "lib")
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
        files = {s.file for s in b.stages} | {s.float32 for s in b.stages if s.float32}
        files |= {f for f in (b.manifest.get("full"), b.manifest.get("float32"))
                  if f and f in b.manifest["files"]}
        files = sorted(files)
        setup = "\n".join(
            [f'adb shell mkdir -p {dev}/bundle/float32',
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
