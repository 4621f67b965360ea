"""The SavedModel contract between training (which exports) and serving / the gateway (which call).

This module holds the names only and imports no TensorFlow, so the gateway can use it. The graph
that implements the contract is built by :mod:`training.export`;
``tests/training/test_export_contract.py`` checks models a real worker published against it,
loading them with TF Serving's own Session loader.

Signature ``serving_default``:
  input  ``images``  uint8   [-1, H, W, C]  raw pixels; normalization happens inside the graph
  output ``scores``  float32 [-1, K]        softmax probabilities
  output ``classes`` string  [-1, K]        class names aligned with ``scores``
"""

from __future__ import annotations

SERVE_TAG = "serve"
SIGNATURE_NAME = "serving_default"
PREDICT_METHOD_NAME = "tensorflow/serving/predict"
INPUT_KEY = "images"
SCORES_KEY = "scores"
CLASSES_KEY = "classes"
INPUT_DTYPE = "DT_UINT8"
SCORES_DTYPE = "DT_FLOAT"
CLASSES_DTYPE = "DT_STRING"

ASSETS_EXTRA_DIR = "assets.extra"
# A version folder holds a model once one of these is in it (TF Serving looks for either).
GRAPH_FILES = ("saved_model.pb", "saved_model.pbtxt")
METADATA_FILE = "assets.extra/metadata.json"
# The largest metadata.json anyone reads (workers write a few KB; its training history grows with
# epochs): a bigger one, or one that is not a regular file, reads as absent.
METADATA_MAX_BYTES = 1 << 20
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
EVALUATION_FILE = "assets.extra/evaluation.json"

# The key of metadata.json that names the gateway's preprocessing profile a version was trained
# for (api/preprocess.py): ``digit`` for MNIST (its digits were normalised as that profile
# does), ``photo`` for CIFAR-10 and image folders (their images were read with fdl/photo.py).
# Versions published before it was recorded lack it; the gateway then goes by channel count.
PROFILE_KEY = "preprocessing_profile"
DIGIT_PROFILE = "digit"
PHOTO_PROFILE = "photo"
PROFILES = (DIGIT_PROFILE, PHOTO_PROFILE)
