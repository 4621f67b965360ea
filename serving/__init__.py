"""A TensorFlow Serving-compatible model server for machines without ``tensorflow_model_server``.

Run it as ``fdl-model-server`` or ``python -m serving`` with TF Serving's flags (see
``docs/serving.md``).
"""
