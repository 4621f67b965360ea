"""A SavedModel loaded the way TF Serving loads it (the TF1 Session loader), and called."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from fdl import contract


def load_session(path: Path) -> tuple[tf.compat.v1.Session, Any]:
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, [contract.SERVE_TAG], str(path))
    return session, meta_graph.signature_def[contract.SIGNATURE_NAME]


def predict(session: tf.compat.v1.Session, signature: Any, images: np.ndarray):
    feeds = {signature.inputs[contract.INPUT_KEY].name: images}
    fetches = [signature.outputs[k].name for k in (contract.SCORES_KEY, contract.CLASSES_KEY)]
    return session.run(fetches, feed_dict=feeds)
