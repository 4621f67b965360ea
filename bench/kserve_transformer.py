"""A KServe image transformer in front of the model server, as KServe's own sample writes one.

Runs in the virtual environment that ``bench/peers.py`` creates (``kserve``, ``pillow``), never in
ours. Like KServe's image-transformer sample (docs/samples/v1beta1/transformer): ``preprocess``
decodes each instance's base64 image, converts it to grey or RGB, resizes it to the model's input
and returns a REST v1 ``{"instances": [...]}`` body; the default ``predict`` forwards it to the
predictor (``--predictor_host``, our model server's REST port) at ``/v1/models/NAME:predict``.
The request body is the gateway's JSON: ``{"instances": [{"b64": "..."}]}``.

    python kserve_transformer.py --model_name digits --predictor_host 127.0.0.1:8501 \
        --http_port 8080 --enable_grpc false --height 28 --width 28 --channels 1
"""

from __future__ import annotations

import argparse

from kserve import Model, ModelServer, model_server
from peer_preprocess import image_transform


class ImageTransformer(Model):
    def __init__(self, name: str, size: tuple[int, int], channels: int) -> None:
        super().__init__(name)
        self.size = size
        self.channels = channels
        self.ready = True

    def preprocess(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        return {
            "instances": [
                image_transform(instance["b64"], self.size, self.channels)
                for instance in payload["instances"]
            ]
        }


parser = argparse.ArgumentParser(parents=[model_server.parser])
parser.add_argument("--height", type=int, default=28)
parser.add_argument("--width", type=int, default=28)
parser.add_argument("--channels", type=int, default=1)
args, _ = parser.parse_known_args()

if __name__ == "__main__":
    model = ImageTransformer(args.model_name, (args.width, args.height), args.channels)
    ModelServer().start([model])
