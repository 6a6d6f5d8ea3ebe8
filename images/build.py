"""Build the workspace image offline.

Steps, each cached:

1. **Base image** ``tw-base:bookworm``. Reused when it exists locally. Otherwise, if a
   ``python:3.11-slim-bookworm`` image is present it is used as is; else a Debian bookworm root
   is bootstrapped with ``debootstrap --variant=minbase`` (python3 + venv) and imported with
   ``docker import``. No registry is needed.
2. **Wheelhouse** ``build/wheels``: ``pip download`` of ``images/workspace/requirements.in``
   constrained by ``requirements.lock``, binary wheels only, for the image's Python (Debian
   bookworm's 3.11.2). This is the only step that needs a package index; an air-gapped site
   copies the folder in.
3. **Image** ``tw-workspace:<hash>`` (also tagged ``tw-workspace:latest``): built from a staged
   context with ``pip install --no-index``. The hash covers everything that goes into the image
   (Dockerfile, lock, wheel names, the ``sdc`` package, the workspace helper and its config), so
   an unchanged tree is not rebuilt.

Run ``python images/build.py --help``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE_DIR = ROOT / "images" / "workspace"
BASE_TAG = "tw-base:bookworm"
IMAGE_REPO = "tw-workspace"
PYTHON_VERSION = "3.11.2"  # Debian bookworm's python3
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any"]
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")


def log(msg: str) -> None:
    print(f"[images] {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def ensure_base() -> str:
    if image_exists(BASE_TAG):
        log(f"base image {BASE_TAG} present")
        return BASE_TAG
    for candidate in ("python:3.11-slim-bookworm", "python:3.11-bookworm"):
        if image_exists(candidate):
            log(f"using local {candidate} as base")
            run(["docker", "tag", candidate, BASE_TAG])
            return BASE_TAG
    if not shutil.which("debootstrap"):
        sys.exit("images: no base image and no debootstrap (apt-get install debootstrap)")
    log("bootstrapping a Debian bookworm base with debootstrap (about a minute)")
    with tempfile.TemporaryDirectory(prefix="tw-base-") as tmp:
        rootfs = Path(tmp) / "root"
        run(
            [
                "debootstrap", "--variant=minbase", "--include=python3,python3-venv",
                "bookworm", str(rootfs), DEBIAN_MIRROR,
            ],
            stdout=subprocess.DEVNULL,
        )
        # Drop apt lists and caches: the image never runs apt.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / sub).glob("*"):
                if p.is_file():
                    p.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run(["docker", "import", "-c", "ENV LANG=C.UTF-8", "-", BASE_TAG], stdin=tar.stdout,
            stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            sys.exit("images: tar of the bootstrapped root failed")
    return BASE_TAG


def ensure_wheelhouse(wheels: Path) -> None:
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "-qq", "--disable-pip-version-check",
        "-r", str(IMAGE_DIR / "requirements.in"), "-c", str(ROOT / "requirements.lock"),
        "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
        "--abi", "cp311", "-d", str(wheels),
    ]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    log(f"wheelhouse {wheels.relative_to(ROOT)} (pip download for Python {PYTHON_VERSION})")
    run(cmd)


def frozen_requirements(wheels: Path) -> str:
    """Pin every wheel in the wheelhouse that the lock pins: the image installs exactly these."""
    names = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "==" in line:
            name, ver = line.split("==", 1)
            names[name.lower().replace("_", "-")] = ver.split()[0]
    wanted = [
        line.split("#")[0].strip()
        for line in (IMAGE_DIR / "requirements.in").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    missing = [w for w in wanted if w.lower() not in names]
    if missing:
        sys.exit(f"images: not in requirements.lock: {', '.join(missing)} (re-run the lock)")
    return "".join(f"{w}=={names[w.lower()]}\n" for w in wanted)


def content_hash(paths: list[Path], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for base in paths:
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts:
                continue
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build(force: bool = False) -> str:
    ensure_base()
    wheels = ROOT / "build" / "wheels"
    ensure_wheelhouse(wheels)
    reqs = frozen_requirements(wheels)
    wheel_names = "\n".join(sorted(p.name for p in wheels.glob("*.whl")))
    inputs = [IMAGE_DIR, ROOT / "sdc", ROOT / "requirements.lock", Path(__file__)]
    tag = f"{IMAGE_REPO}:{content_hash(inputs, reqs + wheel_names)}"
    if image_exists(tag) and not force:
        log(f"image {tag} is up to date")
    else:
        with tempfile.TemporaryDirectory(prefix="tw-ctx-") as tmp:
            ctx = Path(tmp)
            shutil.copytree(IMAGE_DIR, ctx, dirs_exist_ok=True)
            # hard links keep staging the 300 MB wheelhouse instant
            shutil.copytree(wheels, ctx / "wheels", copy_function=os.link)
            shutil.copytree(ROOT / "sdc", ctx / "sdc",
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            (ctx / "requirements.txt").write_text(reqs)
            log(f"docker build {tag}")
            env = dict(os.environ, DOCKER_BUILDKIT="0")
            run(["docker", "build", "--quiet", "--build-arg", f"BASE={BASE_TAG}",
                 "-t", tag, str(ctx)], env=env, stdout=subprocess.DEVNULL)
    run(["docker", "tag", tag, f"{IMAGE_REPO}:latest"])
    print(tag)
    return tag


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when the hash matches")
    args = ap.parse_args()
    try:
        build(force=args.force)
    except subprocess.CalledProcessError as exc:
        sys.exit(f"images: command failed ({exc.returncode}): {' '.join(map(str, exc.cmd))}")


if __name__ == "__main__":
    main()
