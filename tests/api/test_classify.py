"""Classification through the real gateway against the real model server."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from api.image_decode import decode_image
from api.preprocess import digit_to_mnist
from harness.gateway import Gateway, log_lines, post
from harness.mnist import mnist_test_digits, paper_png, png_bytes
from harness.model_server import ModelServer
from harness.repository import PHOTO_CLASSES


def direct_predict(server: ModelServer, model: str, batch: np.ndarray) -> np.ndarray:
    """The model server's own answer, through the official TF Serving client messages."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(batch))
    with grpc.insecure_channel(server.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=10)
    return tf.make_ndarray(response.outputs["scores"])


def test_multipart_batch_matches_direct_predict(
    gateway: Gateway, model_server: ModelServer, data_dir: Path
) -> None:
    digits, _labels = mnist_test_digits(data_dir, 4)
    files = [("file", (f"{i}.png", paper_png(d), "image/png")) for i, d in enumerate(digits)]
    response = post(gateway, "/v1/models/digits:classify", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "digits" and body["version"] == 2
    assert len(body["predictions"]) == 4
    batch = np.stack(
        [digit_to_mnist(decode_image(paper_png(d)))[..., None] for d in digits]
    ).astype(np.uint8)
    expected = direct_predict(model_server, "digits", batch)
    for row, prediction in enumerate(body["predictions"]):
        scores = [entry["score"] for entry in prediction["top_k"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 3
        assert prediction["class_id"] == int(np.argmax(expected[row]))
        assert prediction["label"] == str(prediction["class_id"])
        assert prediction["score"] == pytest.approx(float(expected[row].max()), rel=1e-5)


def test_json_base64_with_top_k(gateway: Gateway, data_dir: Path) -> None:
    digits, _ = mnist_test_digits(data_dir, 3, offset=10)
    instances = [{"b64": base64.b64encode(png_bytes(d)).decode()} for d in digits]
    response = post(
        gateway, "/v1/models/digits:classify", json={"instances": instances, "top_k": 5}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [len(p["top_k"]) for p in predictions] == [5, 5, 5]
    assert all(0 <= p["class_id"] <= 9 for p in predictions)


def test_json_base64_as_tf_serving_reads_it(gateway: Gateway, data_dir: Path) -> None:
    """Line-wrapped base64 (``base64`` and MIME encoders wrap at 76) and base64 without its
    padding: TF Serving's REST API and the model server decode both (absl::Base64Unescape), and
    the same body must classify alike here; a character outside the alphabet stays a 422."""
    # Two digits whose PNGs need padding (a length not a multiple of 3).
    digits = [d for d in mnist_test_digits(data_dir, 20, offset=20)[0] if len(png_bytes(d)) % 3]
    digits = digits[:2]
    encoded = [base64.b64encode(png_bytes(d)).decode() for d in digits]
    plain = post(
        gateway, "/v1/models/digits:classify", json={"instances": [{"b64": e} for e in encoded]}
    )
    assert plain.status_code == 200, plain.text
    wrapped = base64.encodebytes(png_bytes(digits[0])).decode()
    unpadded = encoded[1].rstrip("=") + " \n"
    assert wrapped.count("\n") > 1 and len(unpadded.strip()) % 4
    forms = post(
        gateway,
        "/v1/models/digits:classify",
        json={"instances": [{"b64": wrapped}, {"b64": unpadded}]},
    )
    assert forms.status_code == 200, forms.text
    assert forms.json()["predictions"] == plain.json()["predictions"]
    for bad in (encoded[0][:-4] + "!" + encoded[0][-3:], encoded[0] + "=", encoded[0] + "AAA=x"):
        refused = post(gateway, "/v1/models/digits:classify", json={"instances": [{"b64": bad}]})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "invalid_base64"


def test_top_k_above_the_class_count_is_clamped(gateway: Gateway) -> None:
    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    png = png_bytes(image)
    response = post(
        gateway,
        "/v1/models/photos:classify",
        files=[("file", ("p.png", png, "image/png"))],
        data={"top_k": "10"},
    )
    assert response.status_code == 200, response.text
    top = response.json()["predictions"][0]["top_k"]
    assert sorted(entry["label"] for entry in top) == sorted(PHOTO_CLASSES)


def test_classify_a_given_version(gateway: Gateway) -> None:
    png = png_bytes(np.zeros((28, 28), np.uint8))
    files = [("file", ("a.png", png, "image/png"))]
    one = post(gateway, "/v1/models/digits/versions/1:classify", files=files)
    assert one.status_code == 200 and one.json()["version"] == 1
    missing = post(gateway, "/v1/models/digits/versions/7:classify", files=files)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_classify_a_labelled_version(gateway: Gateway) -> None:
    files = [("file", ("a.png", png_bytes(np.zeros((28, 28), np.uint8)), "image/png"))]
    response = post(gateway, "/v1/models/digits/labels/stable:classify", files=files)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 1


def test_unknown_label_and_model_are_404(gateway: Gateway) -> None:
    files = [("file", ("a.png", png_bytes(np.zeros((28, 28), np.uint8)), "image/png"))]
    label = post(gateway, "/v1/models/digits/labels/nosuchlabel:classify", files=files)
    assert label.status_code == 404, label.text
    assert label.json()["error"]["code"] == "label_not_found"
    model = post(gateway, "/v1/models/no_such_model:classify", files=files)
    assert model.status_code == 404
    assert "no_such_model" in model.json()["error"]["message"]


@pytest.mark.parametrize("name", ["Bad.Name", "..", "a" * 65, "-x"])
def test_model_names_are_validated(gateway: Gateway, name: str) -> None:
    files = [("file", ("a.png", png_bytes(np.zeros((28, 28), np.uint8)), "image/png"))]
    response = post(gateway, f"/v1/models/{name}:classify", files=files)
    assert response.status_code in (404, 422)
    assert "error" in response.json()


def test_exif_rotation_and_transparency_reach_the_model_upright() -> None:
    """The decoder turns a sideways photo upright and keeps drawings on transparent canvases."""
    upright = np.full((40, 20), 255, np.uint8)
    upright[5:35, 8:12] = 0  # a vertical bar
    sideways = Image.fromarray(upright).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    sideways.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    decoded = np.asarray(decode_image(buffer.getvalue()).convert("L"))
    assert decoded.shape == (40, 20)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[5:35, 18:22] = (255, 255, 255, 255)  # white ink, transparent background
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    drawing = digit_to_mnist(decode_image(buffer.getvalue()))
    assert drawing.max() > 200 and drawing[0].max() == 0


def test_request_id_is_echoed_and_logged(gateway: Gateway) -> None:
    files = [("file", ("a.png", png_bytes(np.zeros((28, 28), np.uint8)), "image/png"))]
    response = post(
        gateway,
        "/v1/models/digits:classify",
        files=files,
        headers={**gateway.classifier(), "X-Request-ID": "trace-me-42"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-me-42"
    generated = post(gateway, "/v1/models/digits:classify", files=files)
    assert len(generated.headers["x-request-id"]) == 32
    entries = [e for e in log_lines(gateway.process) if e.get("request_id") == "trace-me-42"]
    assert entries, "no JSON log line carries the request id"
    assert entries[-1]["route"] == "/v1/models/{model}:classify"
    assert entries[-1]["status"] == 200


def test_concurrent_requests_each_get_their_own_answer(gateway: Gateway, data_dir: Path) -> None:
    """Under concurrency the gateway merges Predicts (api.coalesce); no answer may be mixed up."""
    import asyncio

    digits, _labels = mnist_test_digits(data_dir, 24)
    bodies = [png_bytes(d) for d in digits]
    url = f"{gateway.url}/v1/models/digits:classify"

    async def classify_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=gateway.classifier(), timeout=30) as client:
            calls = [client.post(url, files=[("file", ("d.png", b, "image/png"))]) for b in bodies]
            return await asyncio.gather(*calls)

    alone = [post(gateway, "/v1/models/digits:classify", files=[("file", b)]) for b in bodies]
    together = asyncio.run(classify_all())
    for single, concurrent in zip(alone, together, strict=True):
        assert single.status_code == concurrent.status_code == 200, concurrent.text
        first, second = single.json()["predictions"][0], concurrent.json()["predictions"][0]
        assert first["class_id"] == second["class_id"]
        assert first["score"] == pytest.approx(second["score"], rel=1e-5)
