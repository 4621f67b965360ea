"""A LitServe image API in front of the model server, as LitServe's docs write one.

Runs in the virtual environment that ``bench/peers.py`` creates (``litserve``, ``numpy``,
``pillow``, ``requests``), never in ours. The preprocessing is the KServe transformer's
(``bench/peer_preprocess.py``): ``decode_request`` decodes each instance's base64 image,
converts it to grey or RGB and resizes it to the model's input; ``predict`` forwards the REST v1
``{"instances": [...]}`` body to the model server's ``/v1/models/NAME:predict`` with a pooled
``requests`` session; ``encode_response`` returns the model server's JSON. LitServe runs the API
in an inference worker process behind its FastAPI front end (one worker, its defaults).

    python litserve_peer.py --model_name digits --predictor_host 127.0.0.1:8501 --port 8080 \
        --height 28 --width 28 --channels 1
"""

from __future__ import annotations

import argparse

import litserve as ls
import requests
from peer_preprocess import image_transform


class ImageForwarder(ls.LitAPI):
    def __init__(self, predict_url: str, size: tuple[int, int], channels: int) -> None:
        super().__init__()
        self.predict_url = predict_url
        self.size = size
        self.channels = channels

    def setup(self, device: str) -> None:
        self.session = requests.Session()

    def decode_request(self, request: dict) -> dict:
        return {
            "instances": [
                image_transform(instance["b64"], self.size, self.channels)
                for instance in request["instances"]
            ]
        }

    def predict(self, body: dict) -> dict:
        response = self.session.post(self.predict_url, json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def encode_response(self, output: dict) -> dict:
        return output


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--predictor_host", required=True)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--height", type=int, default=28)
    parser.add_argument("--width", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    args = parser.parse_args()
    url = f"http://{args.predictor_host}/v1/models/{args.model_name}:predict"
    api = ImageForwarder(url, (args.width, args.height), args.channels)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False)
