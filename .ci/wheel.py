"""The wheel as a user gets it: built, installed outside the checkout, run from elsewhere.

    python .ci/wheel.py build DIR   build the wheel of the checkout into DIR
    python .ci/wheel.py check       build it, install it into a fresh virtual environment in a
                                    temporary folder, and from another folder run `pila --help`,
                                    `pila configs`, `pila fit --config lab/stageC.yaml
                                    --print_config` and `pila demo --out DIR` (the main job on
                                    the lab world), checking what each leaves

The wheel is built from a copy of the files git tracks or would track (`git ls-files`), so
nothing ignored or left by an earlier build (`build/`) gets in. Offline and quick: the fresh
environment gets the wheel alone (`pip install --no-deps --no-index`), and its dependencies
(torch, Lightning, diffusers…) are those of the environment running this script, seen through
a `.pth` file listing that environment's site-packages after the fresh one's own; only its
own site-packages' `.pth` files are executed, so the checkout's editable install stays out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCENES = 8
"""Videos the demo generates per set: one per lab scene (ours: the lab's eight scenes)."""


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise SystemExit(f"wheel check: `{' '.join(args)}` failed ({result.returncode}):\n{tail}")
    return result.stdout


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"wheel check: {message}")


def source_copy(target: Path) -> Path:
    """The checkout's files as a clean clone plus uncommitted edits would have them."""
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT)
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the work tree is left out
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def build_wheel(out: Path) -> Path:
    """Build the checkout's wheel into ``out``; returns its path."""
    with tempfile.TemporaryDirectory(prefix="pila-src-") as tmp:
        src = source_copy(Path(tmp))
        pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        _run([*pip, "--no-index", "-q", "-w", str(out), str(src)], ROOT)
    (wheel,) = out.glob("pila-*.whl")
    return wheel


def fresh_environment(folder: Path, wheel: Path) -> Path:
    """A new virtual environment holding the wheel; the running one's packages behind it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
    _run([*pip, "--no-index", "-q", str(wheel)], folder)
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(_run([str(python), "-c", code], folder).strip())
    ours = dict.fromkeys(sysconfig.get_path(key) for key in ("purelib", "platlib"))
    (site / "pila-check-dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    return folder / "bin"


def check(keep: Path | None = None) -> dict[str, float]:
    """Build, install and run the wheel outside the checkout; returns seconds per step."""
    seconds: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="pila-wheel-")) if keep is None else keep.resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        wheel = build_wheel(tmp / "dist")
        seconds["build"] = time.perf_counter() - start
        start = time.perf_counter()
        bin_dir = fresh_environment(tmp / "venv", wheel)
        seconds["install"] = time.perf_counter() - start
        work = tmp / "elsewhere"
        work.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        pila = str(bin_dir / "pila")

        start = time.perf_counter()
        where = "import pila, pila.configs, pila.lab.ablate as a; print(pila.__file__, a.LAB_CONFIGS)"
        for path in _run([str(bin_dir / "python"), "-c", where], work, env).split():
            _expect(Path(path).is_relative_to(tmp / "venv"), f"{path} is not the installed wheel's")
        _expect("configs" in _run([pila, "--help"], work, env), "pila --help lacks `configs`")
        _expect("lab/stageC.yaml" in _run([pila, "configs"], work, env), "lab/stageC.yaml not listed")
        printed = _run([pila, "fit", "--config", "lab/stageC.yaml", "--print_config"], work, env)
        model = yaml.safe_load(printed)["model"]["class_path"]
        _expect(model == "pila.stages.StageC", f"--print_config of lab/stageC.yaml printed {model}")
        seconds["help, configs, print_config"] = time.perf_counter() - start

        start = time.perf_counter()
        demo = tmp / "demo"
        _run([pila, "demo", "--out", str(demo)], work, env)
        seconds["demo"] = time.perf_counter() - start
        for folder in ("videos", "videos_baseline"):
            made = sorted((demo / folder).rglob("*.mp4"))
            _expect(len(made) == SCENES, f"{demo / folder} holds {len(made)} videos, not {SCENES}")
        report = (demo / "report" / "comparison.md").read_text(encoding="utf-8")
        print(report)
        print(json.dumps({"wheel": wheel.name, "seconds": {k: round(v, 1) for k, v in seconds.items()}}))
        return seconds
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog=".ci/wheel.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build").add_argument("out", type=Path)
    commands.add_parser("check").add_argument("--keep", type=Path, default=None, help="work here, kept")
    args = parser.parse_args()
    if args.command == "build":
        print(build_wheel(args.out))
        return 0
    start = time.perf_counter()
    check(args.keep)
    print(f"wheel check passed in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
