"""A model trained on a user's image folder is served with the preprocessing it was trained with.

A grey image-folder model (dark digits on white paper, of several sizes) is trained and published by
the real job code, served by the real model server and classified through a real gateway, which
must agree with in-process TensorFlow on the folder's test images: before, the gateway chose the
``digit`` profile for every 1-channel model (it inverted and re-cropped what the model was trained
on: 0.108 accuracy through the gateway, 0.964 in process). And the folder loader's tensor is the
gateway's ``:preprocess`` tensor for an EXIF-rotated JPEG, a transparent PNG, a 16-bit PNG and a
non-square image, grey and RGB (before, training ignored EXIF and alpha, clipped 16 bits, and
stretched with a bilinear resize).
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from fdl import contract
from fdl.jobs import new_job_id
from fdl.repository import sync_config
from harness.gateway import Gateway, post
from harness.mnist import mnist_test_digits
from harness.model_server import model_server_running
from tests.training.stores import store_on_db
from training.data.folder import IMAGE_SUFFIXES, SHUFFLE_SEED, load_image_folder

DB = 14
MODEL = "inkfolder"
GREY = (28, 28, 1)
RGB = (32, 32, 3)
CLASSES = ("1", "4", "7")
VARIANTS = ("v_exif.jpg", "v_alpha.png", "v_16bit.png", "v_wide.png")


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _variants(image: np.ndarray) -> dict[str, bytes]:
    """``image`` (grey H x W or RGB H x W x 3, light background) as the awkward files people have:
    a JPEG stored sideways with an EXIF orientation, a PNG with transparent pixels (stored as
    black), a 16-bit PNG and a non-square image."""
    upright = Image.fromarray(image)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 270 to view: the pixels are stored rotated by 90
    sideways = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(
        sideways, format="JPEG", quality=95, exif=exif.tobytes()
    )
    rgba = np.asarray(upright.convert("RGBA")).copy()
    if image.ndim == 2:  # grey: dark ink drawn on a transparent canvas
        rgba[..., 3] = 255 - image
        rgba[..., :3] = 0
    else:  # colour: the left quarter transparent
        rgba[:, : image.shape[1] // 4] = 0
    grey = np.asarray(upright.convert("L")).astype(np.uint16) * 257
    height, width = image.shape[:2]
    wide = np.full((height, width * 3 // 2, *image.shape[2:]), 255, np.uint8)
    wide[:, width // 4 : width // 4 + width] = image
    return {
        "v_exif.jpg": sideways.getvalue(),
        "v_alpha.png": _png(Image.fromarray(rgba, "RGBA")),
        "v_16bit.png": _png(Image.fromarray(grey)),
        "v_wide.png": _png(Image.fromarray(wide)),
    }


def _paper(digit: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An MNIST digit as dark ink on white, resized to ``size`` (W, H) keeping its aspect ratio
    and padded with paper."""
    side = min(size)
    ink = Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BILINEAR)
    page = np.full((size[1], size[0]), 255, np.uint8)
    top, left = (size[1] - side) // 2, (size[0] - side) // 2
    page[top : top + side, left : left + side] = np.asarray(ink)
    return page


def _write_ink_folder(root: Path, data_dir: Path) -> None:
    digits, labels = mnist_test_digits(data_dir, 2000)
    sizes = [(28, 28), (40, 40), (44, 32), (30, 38)]
    for name in CLASSES:
        mine = digits[labels == int(name)]
        for split, start, count in (("train", 0, 40), ("test", 40, 8)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                page = _paper(mine[start + i], sizes[i % len(sizes)])
                Image.fromarray(page).save(folder / f"{i:03d}.png")
        for file, data in _variants(_paper(mine[60], (40, 40))).items():
            (root / "test" / name / file).write_bytes(data)


def _loader_order(root: Path, split: str, classes: list[str]) -> list[Path]:
    """The files of a split in the order of the loader's rows (class folders in order, files
    sorted, then the loader's fixed permutation)."""
    files = [
        path
        for name in classes
        for path in sorted((root / split / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(files))
    return [files[i] for i in order]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    data_dir: Path,
    redis_url: str,
    pristine_repository: Path,
    logs_dir: Path,
    gateways_here: Callable[..., AbstractContextManager[Gateway]],
) -> Iterator[dict[str, Any]]:
    """The ink folder, the model a real job published from it (plus the tests' ``photos`` and two
    copies: ``inkbroken`` whose metadata.json is not JSON, ``inkoverride`` that FDL_PROFILES sets
    to ``digit``, ``inkold`` whose metadata.json records no profile, as versions published before
    profiles were recorded), a model server and a gateway over them."""
    from fdl.jobspec import JobSpec
    from training.job import run_job
    from training.settings import WorkerSettings

    root = tmp_path_factory.mktemp("folder-serving")
    _write_ink_folder(root / "data" / MODEL, data_dir)
    models = root / "models"
    settings = WorkerSettings(
        redis_url="redis://unused",
        data_dir=root / "data",
        model_dir=models,
        var_dir=root / "var",
        download=False,
    )
    spec = JobSpec(
        model="mnist_logreg",
        dataset=MODEL,
        publish_as=MODEL,
        epochs=2,
        batch_size=16,
        validation_split=12,
        # At 0.5 the tiny logistic regression does not fit its own training images (62%, a
        # training loss of 46, over the divergence limit 10 ln 3, as is its test loss of 40):
        # refused as diverged.
        optimizer={"name": "sgd", "learning_rate": 0.05},
    )
    job_id = new_job_id()
    for store in store_on_db(redis_url, DB):
        store.create(spec.model_dump(mode="json"), job_id)
        run_job(job_id, store, settings)
        record = store.get(job_id)
        assert record is not None and record["status"] == "succeeded", record
    version = models / MODEL / "1"
    shutil.copytree(pristine_repository / "photos", models / "photos")
    for copy in ("inkbroken", "inkoverride", "inkold"):
        shutil.copytree(version, models / copy / "1")
        (models / copy / "1" / contract.WARMUP_FILE).unlink()  # its requests name inkfolder
    (models / "inkbroken" / "1" / contract.METADATA_FILE).write_text('{"preprocessing_profile":')
    old = json.loads((version / contract.METADATA_FILE).read_text())
    del old[contract.PROFILE_KEY]
    (models / "inkold" / "1" / contract.METADATA_FILE).write_text(json.dumps(old))
    sync_config(models)
    wanted = {MODEL: 1, "photos": 1, "inkbroken": 1, "inkoverride": 1, "inkold": 1}
    with (
        model_server_running("model-server-folders", models, logs_dir, wanted) as server,
        gateways_here(
            "gateway-folders",
            serving_port=server.port,
            model_dir=models,
            FDL_PROFILES=json.dumps({"inkoverride": "digit"}),
        ) as gateway,
    ):
        yield {"root": root / "data" / MODEL, "version": version, "gateway": gateway}


def _preview(gateway: Gateway, model: str, data: bytes) -> np.ndarray:
    response = post(
        gateway,
        f"/v1/models/{model}:preprocess",
        content=data,
        headers={**gateway.classifier(), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(response.content)) as image:
        return np.asarray(image)


def test_the_published_version_records_the_photo_profile(served: dict[str, Any]) -> None:
    metadata = json.loads((served["version"] / contract.METADATA_FILE).read_text())
    assert metadata[contract.PROFILE_KEY] == contract.PHOTO_PROFILE
    gateway: Gateway = served["gateway"]
    profiles = {}
    for model in (MODEL, "inkbroken", "inkoverride", "inkold", "photos"):
        response = httpx.get(f"{gateway.url}/v1/models/{model}", headers=gateway.classifier())
        assert response.status_code == 200, response.text
        profiles[model] = response.json()["input"]["profile"]
    # Recorded; unreadable metadata: by channel count, never an error; FDL_PROFILES first;
    # inkold records no profile (published before profiles were recorded) but its dataset, an
    # image folder: photo (before, digit); photos records neither: by channel count.
    assert profiles == {
        MODEL: "photo",
        "inkbroken": "digit",
        "inkoverride": "digit",
        "inkold": "photo",
        "photos": "photo",
    }


def test_gateway_agrees_with_tensorflow_on_the_folder_test_images(served: dict[str, Any]) -> None:
    from harness.savedmodel import load_session, predict

    data = load_image_folder(served["root"], MODEL, GREY)
    files = _loader_order(served["root"], "test", sorted(CLASSES))
    assert [CLASSES.index(path.parent.name) for path in files] == list(data.y_test)
    session, signature = load_session(served["version"])
    with session:
        scores, _classes = predict(session, signature, data.x_test)
    gateway: Gateway = served["gateway"]
    multipart = [("file", (path.name, path.read_bytes(), "image/png")) for path in files]
    response = post(gateway, f"/v1/models/{MODEL}:classify", files=multipart)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["class_id"] for p in predictions] == list(scores.argmax(axis=1))
    for row, prediction in enumerate(predictions):
        assert prediction["score"] == pytest.approx(float(scores[row].max()), rel=1e-5)
    # A copy published before profiles were recorded is sent the same tensors.
    response = post(gateway, "/v1/models/inkold:classify", files=multipart)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == predictions
    # And the broken copy still classifies (by channel count), never a 500.
    response = post(gateway, "/v1/models/inkbroken:classify", files=multipart[:2])
    assert response.status_code == 200, response.text


def test_grey_folder_tensors_are_the_gateways(served: dict[str, Any]) -> None:
    data = load_image_folder(served["root"], MODEL, GREY)
    files = _loader_order(served["root"], "test", sorted(CLASSES))
    checked = 0
    for row, path in enumerate(files):
        if path.name in VARIANTS or row % 5 == 0:
            tensor = _preview(served["gateway"], MODEL, path.read_bytes())
            assert np.array_equal(tensor, data.x_test[row][..., 0]), path
            checked += 1
    assert checked > len(VARIANTS) * len(CLASSES)


def test_rgb_folder_tensors_are_the_gateways(
    served: dict[str, Any], data_dir: Path, tmp_path: Path
) -> None:
    with np.load(data_dir / "cifar10" / "cifar10-test-first1000-exact.npz") as exact:
        images = exact["x_test"][:2]
    for name, image in zip(("a", "b"), images, strict=True):
        large = np.asarray(Image.fromarray(image).resize((64, 64), Image.Resampling.LANCZOS))
        for split in ("train", "test"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for file, data in _variants(large).items():
                (folder / file).write_bytes(data)
    data = load_image_folder(tmp_path, "rgbvariants", RGB)
    files = _loader_order(tmp_path, "test", ["a", "b"])
    for row, path in enumerate(files):
        tensor = _preview(served["gateway"], "photos", path.read_bytes())
        assert np.array_equal(tensor, data.x_test[row]), path
