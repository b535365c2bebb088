"""`make gpu-wheels`: the Python 3.12 wheels the GPU smoke needs beyond the GPU machine's own stack, in .gpu-wheels/.

    python scripts/gpu/wheels.py [--dest .gpu-wheels] [--list]

scripts/gpu/wheels.txt names them (name==version, optionally a manylinux platform tag, or `build` for DeepSpeed,
which publishes no wheel: it is built here with its C++/CUDA ops off, a pure-Python wheel that compiles ops on first
use where a compiler is). Downloaded with pip for CPython 3.12 on manylinux x86_64, whatever this machine runs.
A wheel already there is kept; the folder's MANIFEST.json records name, size and sha256 of each, and the total must
stay under BUDGET_MIB (the device machine takes 64 MiB with the working tree). `--list` prints the pins and exits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WHEEL_LIST = HERE / "wheels.txt"
DEFAULT_DEST = REPO / ".gpu-wheels"
MANIFEST = "MANIFEST.json"
BUDGET_MIB = 56.0  # of the device machine's 64 MiB: the rest is the working tree
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    build: bool = False  # no wheel on PyPI: build one here
    platform: str | None = None  # an extra manylinux tag pip must match exactly

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    def wheel_prefix(self) -> str:
        """A wheel's file name starts with the project name normalised to underscores, then the version."""
        return f"{re.sub(r'[-_.]+', '_', self.name).lower()}-{self.version}-"


def read_pins(path: Path = WHEEL_LIST) -> list[Pin]:
    pins = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *extra = line.split()
        if "==" not in requirement or len(extra) > 1:
            raise ValueError(f"{path}:{number}: expected 'name==version [build|manylinux_...]', got {raw!r}")
        name, version = requirement.split("==")
        tag = extra[0] if extra else None
        if tag not in (None, "build") and not tag.startswith("manylinux"):
            raise ValueError(f"{path}:{number}: {tag!r} is neither 'build' nor a manylinux platform tag")
        pins.append(Pin(name, version, build=tag == "build", platform=tag if tag and tag != "build" else None))
    return pins


def find_wheel(dest: Path, pin: Pin) -> Path | None:
    return next((p for p in sorted(dest.glob("*.whl")) if p.name.lower().startswith(pin.wheel_prefix())), None)


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    """pip, quiet unless it fails (its notices about this machine's local index folders are noise)."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def download(pin: Pin, dest: Path) -> None:
    platforms = ([pin.platform] if pin.platform else []) + list(PLATFORMS)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", PYTHON_VERSION, "--implementation", "cp", "-d", str(dest)]
    for platform in platforms:
        command += ["--platform", platform]
    run([*command, pin.requirement])


def build(pin: Pin, dest: Path) -> None:
    """DeepSpeed from its sdist with every op off (DS_BUILD_OPS=0): a py3-none-any wheel; its setup imports torch,
    so the build runs without isolation in this environment (which has torch)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DS_BUILD_OPS": "0"}
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        run([*command, "--no-binary", pin.name, "-w", tmp, pin.requirement], env=env)
        (built,) = Path(tmp).glob("*.whl")
        if not built.name.endswith("-py3-none-any.whl"):
            raise RuntimeError(f"{built.name}: expected a pure-Python wheel (ops off); it would not run on the GPU box")
        os.replace(built, dest / built.name)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def collect(dest: Path, pins: list[Pin]) -> dict:
    dest.mkdir(parents=True, exist_ok=True)
    wanted = []
    for pin in pins:
        wheel = find_wheel(dest, pin)
        if wheel is None:
            print(f"gpu-wheels: {'building' if pin.build else 'downloading'} {pin.requirement}", flush=True)
            build(pin, dest) if pin.build else download(pin, dest)
            wheel = find_wheel(dest, pin)
            if wheel is None:
                raise RuntimeError(f"{pin.requirement}: no wheel named {pin.wheel_prefix()}* arrived in {dest}")
        wanted.append(wheel)
    for stray in set(dest.glob("*.whl")) - set(wanted):  # another version left from an older list: two stop pip
        stray.unlink()
    manifest = {
        "python": PYTHON_VERSION,
        "wheels": [{"file": w.name, "bytes": w.stat().st_size, "sha256": sha256(w)} for w in wanted],
    }
    manifest["total_mib"] = round(sum(w["bytes"] for w in manifest["wheels"]) / 2**20, 2)
    tmp = dest / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, dest / MANIFEST)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-wheels", description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--list", action="store_true", help="print the pins and exit")
    args = parser.parse_args(argv)
    pins = read_pins()
    if args.list:
        for pin in pins:
            print(pin.requirement + (" (built here)" if pin.build else ""))
        return 0
    manifest = collect(args.dest, pins)
    print(f"gpu-wheels: {len(manifest['wheels'])} wheels, {manifest['total_mib']} MiB in {args.dest}")
    if manifest["total_mib"] > BUDGET_MIB:
        print(f"gpu-wheels: over the {BUDGET_MIB} MiB budget: drop a wheel from {WHEEL_LIST}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
