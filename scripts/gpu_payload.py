"""What `kpdd experiment` needs on an offline GPU machine, one with no package registry and no model hub.

    python scripts/gpu_payload.py wheels [--dir .whl] [--max-mib N]    # the Python 3.12 wheels the image lacks
    python scripts/gpu_payload.py pack   [--dir .gpu] [--part-mib N]   # the evaluation data and the student's GGUF

`wheels` downloads exactly the pinned set below (removing any other wheel from the folder), checks that every
requirement of every carried wheel is met by another carried wheel or by the image's packages
(`scripts/gpu-image-packages.txt`), and prints each wheel's size and the total (an error above ``--max-mib``).

`pack` writes `data.tar.gz` (GSM8K, SVAMP, ASDiv, MultiArith) and the shipped student's GGUF, gzipped (about
88.6 MiB) as `model.part1`, `model.part2`, ... of at most ``--part-mib`` each (one part without it) with a SHA-256
file: where one transfer to the machine is capped, the parts travel in several runs (docs/GPU-EXPERIMENT.md,
"What travels").
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
IMAGE_PACKAGES = ROOT / "scripts" / "gpu-image-packages.txt"
MIB = 2**20

# The image lacks these. Versions are the ones the project's CPU environment tests together (pyproject.toml),
# except litellm: dspy 3.4.1 accepts >= 1.65.8, a 7 MB wheel, where 1.110 is 43 MB (dspy imports litellm at
# import time; kpdd's local students never call it). mlflow-skinny holds the tracking client and the SQLite store;
# sqlalchemy and alembic are the store's own needs (the full mlflow wheel adds the UI server, 12 MB).
PINS = [
    "dspy==3.4.1", "gepa==0.1.4", "litellm==1.65.8", "openai==3.57.0", "httpx2==2.16.2", "httpcore2==2.16.2",
    "truststore==0.10.5", "jiter==0.19.0", "sniffio==1.3.1", "orjson==3.13.0", "pydantic==2.14.4",
    "pydantic-core==2.50.5", "annotated-types==0.8.0", "typing-inspection==0.4.5", "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1", "referencing==0.37.0", "rpds-py==2026.9.1", "diskcache==5.6.3",
    "json-repair==0.64.6", "tenacity==9.2.1", "cachetools==7.3.3", "importlib-metadata==8.9.0",
    "python-dotenv==1.2.4",
    "mlflow-skinny==3.17.2", "sqlalchemy==2.1.9", "alembic==1.20.1", "mako==1.4.3", "sqlparse==0.6.1",
    "databricks-sdk==0.162.0", "google-auth==2.63.0", "pyasn1==0.6.5", "pyasn1-modules==0.4.2",
    "cryptography==50.0.2", "cffi==2.1.1", "pycparser==3.12", "fastapi==0.136.3", "starlette==1.10.0",
    "uvicorn==0.54.0", "gitpython==3.2.1", "gitdb==4.0.12", "smmap==5.0.3", "opentelemetry-api==1.45.2",
    "opentelemetry-proto==1.45.2", "opentelemetry-sdk==1.45.2", "opentelemetry-semantic-conventions==0.66b2",
    "trl==1.16.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19",
    "gguf==0.19.0",  # transformers reads the shipped GGUF with it
]

# The GPU machine's image: Python 3.12 (CPython), manylinux x86-64.
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]
MARKER_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def image_packages() -> dict[str, Version | None]:
    """The image's package names, each with its version where one is known."""
    packages = {}
    for line in IMAGE_PACKAGES.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            packages[canonicalize_name(name)] = Version(version) if version else None
    return packages


def download_wheels(folder: Path) -> list[Path]:
    """The pinned wheels in ``folder``: fetch what is missing, remove what is not pinned."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {canonicalize_name(Requirement(pin).name): pin for pin in PINS}
    present = {canonicalize_name(parse_wheel_filename(p.name)[0]): p for p in folder.glob("*.whl")}
    for name, path in present.items():
        pinned_version = str(Requirement(wanted[name]).specifier).removeprefix("==") if name in wanted else None
        if str(parse_wheel_filename(path.name)[1]) != pinned_version:
            path.unlink()  # two versions of one package stop the whole install there
    missing = [pin for name, pin in wanted.items() if not any(
        canonicalize_name(parse_wheel_filename(p.name)[0]) == name for p in folder.glob("*.whl"))]
    if missing:
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                        "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", *platforms,
                        "-d", str(folder), *missing], check=True, stderr=subprocess.PIPE, text=True)
    return sorted(folder.glob("*.whl"))


def requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    return [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]


def unmet_requirements(wheels: list[Path], image: dict[str, Version | None]) -> list[str]:
    """Requirements that neither a carried wheel nor the image meets (with the extras asked for, e.g. gepa[dspy])."""
    carried = {canonicalize_name(parse_wheel_filename(w.name)[0]): (w, parse_wheel_filename(w.name)[1])
               for w in wheels}
    extras: dict[str, set[str]] = {name: {""} for name in carried}

    def active(name: str, req: Requirement) -> bool:
        return not req.marker or any(req.marker.evaluate({**MARKER_ENV, "extra": e}) for e in extras[name])

    changed = True
    while changed:  # an extra asked for by an active requirement can activate further requirements
        changed = False
        for name, (wheel, _) in carried.items():
            for req in requirements(wheel):
                dep = canonicalize_name(req.name)
                if req.extras and dep in extras and active(name, req) and not set(req.extras) <= extras[dep]:
                    extras[dep] |= set(req.extras)
                    changed = True
    problems = []
    for name, (wheel, _) in sorted(carried.items()):
        for req in requirements(wheel):
            if not active(name, req):
                continue
            dep = canonicalize_name(req.name)
            version = carried[dep][1] if dep in carried else image.get(dep)
            if dep not in carried and dep not in image:
                problems.append(f"{wheel.name} needs {req}: neither carried nor in the image")
            elif version is not None and not req.specifier.contains(version, prereleases=True):
                where = "carried" if dep in carried else "in the image"
                problems.append(f"{wheel.name} needs {req}: {version} is {where}")
    return problems


def wheels_command(folder: Path, max_mib: float | None) -> int:
    wheels = download_wheels(folder)
    problems = unmet_requirements(wheels, image_packages())
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / MIB:7.2f} MiB  {wheel.name}")
    print(f"total: {total / MIB:.1f} MiB in {len(wheels)} wheels ({folder})")
    for problem in problems:
        print(f"unmet: {problem}", file=sys.stderr)
    if max_mib is not None and total > max_mib * MIB:
        print(f"error: the wheels take {total / MIB:.1f} MiB, over --max-mib {max_mib:g}", file=sys.stderr)
        return 1
    return 1 if problems else 0


def shipped_gguf() -> Path:
    sys.path.insert(0, str(ROOT))
    from kpdd.finetune.student import DEFAULT_BASE, SHIPPED_MODELS, _shipped_gguf

    return _shipped_gguf(SHIPPED_MODELS[DEFAULT_BASE])


def pack_command(folder: Path, data_dir: Path, part_mib: float | None) -> int:
    """data.tar.gz, model.part1, model.part2, ... (the gzipped GGUF cut every ``part_mib``) and model.sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "data.tar.gz", "w:gz") as archive:
        for name in ("gsm8k", "svamp", "asdiv", "multiarith"):
            archive.add(data_dir / name, arcname=name)
    gguf = shipped_gguf()
    packed = folder / "model.gguf.gz"
    with gguf.open("rb") as source, gzip.open(packed, "wb", compresslevel=6) as target:
        shutil.copyfileobj(source, target, 16 * MIB)
    blob = packed.read_bytes()
    packed.unlink()
    for old in folder.glob("model.part*"):  # parts of an earlier, differently cut pack
        old.unlink()
    cut = round(part_mib * MIB) if part_mib else len(blob)
    for index, offset in enumerate(range(0, len(blob), cut), start=1):
        (folder / f"model.part{index}").write_bytes(blob[offset:offset + cut])
    (folder / "model.sha256").write_text(f"{hashlib.sha256(blob).hexdigest()}  {gguf.name}\n")
    for path in sorted(folder.iterdir()):
        print(f"{path.stat().st_size / MIB:7.2f} MiB  {path}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    wheels = sub.add_parser("wheels", help="fill the wheel folder and print its total")
    wheels.add_argument("--dir", type=Path, default=ROOT / ".whl")
    wheels.add_argument("--max-mib", type=float, default=None, help="fail when the wheels take more (default: no cap)")
    pack = sub.add_parser("pack", help="the data archive and the gzipped GGUF, in parts where asked")
    pack.add_argument("--dir", type=Path, default=ROOT / ".gpu")
    pack.add_argument("--data-dir", type=Path, default=None, help="default: $KPDD_DATA_DIR or ../shared/data")
    pack.add_argument("--part-mib", type=float, default=None,
                      help="cut the gzipped GGUF into parts of at most this many MiB (default: one part)")
    args = parser.parse_args()
    if args.command == "wheels":
        return wheels_command(args.dir, args.max_mib)
    import os

    data_dir = args.data_dir or Path(os.environ.get("KPDD_DATA_DIR") or ROOT.parent / "shared" / "data")
    return pack_command(args.dir, data_dir, args.part_mib)


if __name__ == "__main__":
    sys.exit(main())
