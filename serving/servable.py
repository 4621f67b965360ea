"""One loaded model version: a SavedModel in its own Graph and Session, as TF Serving loads it.

Loading uses ``tf.compat.v1.saved_model.loader.load(session, ["serve"], path)`` (the Python face of
the C++ ``LoadSavedModel`` that TF Serving calls), so a model TF Serving rejects fails here too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
from tensorflow.python.util import deprecation

from fdl import contract
from fdl.tensors import dtype_name, numpy_dtype
from serving.errors import ServingError, invalid

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit per model version


def signature_key(name: str) -> str:
    return name or DEFAULT_SIGNATURE


class Servable:
    """A loaded version; ``run`` validates inputs against the signature and runs the session."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        session_config: Any | None = None,
        tags: Iterable[str] = (SERVE_TAG,),
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config)
        try:
            with self.graph.as_default(), deprecation.silence():
                meta: meta_graph_pb2.MetaGraphDef = tf.compat.v1.saved_model.loader.load(
                    self.session, list(tags), str(path)
                )
        except BaseException:
            self.session.close()
            raise
        self.graph.finalize()
        self.signatures: Mapping[str, meta_graph_pb2.SignatureDef] = dict(meta.signature_def)
        self._callables: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Any] = {}
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self.batchers: dict[tuple[str, ...], Any] = {}  # (signature, *output keys)
        self.batching: Any = None  # its serving.batching_config.Batching; None: unbatched
        # (model, seconds) per request's Session run: its own run, or with batching its wait in
        # the queue plus its batch's run, as TF Serving times the Run call of a batching session.
        self.on_run: Callable[[str, float], None] | None = None
        # Moving average of Session run time; the gRPC front end runs short models inline.
        self.typical_run_s = float("inf")

    def record_run(self, seconds: float) -> None:
        if self.on_run is not None:
            self.on_run(self.name, seconds)

    # --- request accounting, so unloading waits for requests still running -------------------
    def acquire(self) -> None:
        with self._lock:
            self._in_flight += 1

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout)
        for batcher in list(self.batchers.values()):
            batcher.stop()
        self._callables.clear()  # releases the callables while their Session is still open
        self.session.close()

    # --- signatures -------------------------------------------------------------------------
    def signature(self, name: str, rest: bool = False) -> meta_graph_pb2.SignatureDef:
        """The SignatureDef a request names (``""``: ``serving_default``).

        An unknown one is TF Serving's error: FAILED_PRECONDITION ``Serving signature key "x"
        not found.`` on the Predict path (predict_util.cc, RunPredict), and with ``rest``
        INVALID_ARGUMENT ``Serving signature name: "x" not found in signature def``, which its
        REST handler answers first while reading the JSON (http_rest_api_handler.cc,
        GetInfoMap).
        """
        key = signature_key(name)
        found = self.signatures.get(key)
        if found is None:
            if rest:
                raise invalid(f'Serving signature name: "{key}" not found in signature def')
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
            )
        return found

    def check_input_names(self, signature_name: str, sent: Collection[str]) -> None:
        """TF Serving's checks of a request's input names, made before it parses any tensor:
        the counts (``predict_util.cc``, ``VerifyRequestInputsSize``), then each of the
        signature's inputs (``saved_model/util.cc``, ``GetInputValues``; signature defaults are
        not supported here). INVALID_ARGUMENT with TF Serving's texts."""
        inputs = self.signature(signature_name).inputs
        if len(sent) != len(inputs):
            extra, missing = sorted(set(sent) - set(inputs)), sorted(set(inputs) - set(sent))
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(inputs)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(inputs))}}}). "
                f"Sent extra: {{{','.join(extra)}}}. "
                f"Missing but required: {{{','.join(missing)}}}."
            )
        for alias in sorted(inputs):
            if alias not in sent:
                raise invalid(
                    f"Signature input alias: {alias}(feed name: {inputs[alias].name}) not found "
                    "in request and no default value provided. Inputs expected to be in the "
                    f"request {{{','.join(sorted(sent))}}}, or default input alias set: "
                )

    def validate(
        self, signature_name: str, inputs: Mapping[str, np.ndarray]
    ) -> meta_graph_pb2.SignatureDef:
        """Check names, dtypes and shapes; errors are INVALID_ARGUMENT naming the tensor."""
        signature = self.signature(signature_name)
        self.check_input_names(signature_name, inputs.keys())
        for key, array in inputs.items():
            info = signature.inputs[key]
            want = numpy_dtype(info.dtype, invalid)
            if array.dtype != want and not (want == np.dtype(object) and array.dtype.kind in "OS"):
                raise invalid(
                    f"Expects arg for input '{key}' ({info.name}) to be {dtype_name(info.dtype)} "
                    f"but {array.dtype.name if array.dtype != object else 'string'} is provided"
                )
            if not info.tensor_shape.unknown_rank:
                dims = [d.size for d in info.tensor_shape.dim]
                if len(dims) != array.ndim or any(
                    d >= 0 and d != s for d, s in zip(dims, array.shape, strict=False)
                ):
                    raise invalid(
                        f"input '{key}' ({info.name}) has shape {list(array.shape)}, "
                        f"incompatible with the signature's shape {dims} (-1 = any)"
                    )
        return signature

    def output_keys(self, signature_name: str, output_filter: Iterable[str]) -> list[str]:
        """The outputs to fetch, sorted, checked alias by alias as TF Serving's
        ``PreProcessPrediction`` checks ``output_filter`` (``predict_util.cc``); none named: all.
        Sorted, so the filter's order (which the answer, a map, does not show) makes neither a
        Session callable nor a batch queue of its own: every order of n outputs made one each,
        kept until the version unloads, and split batches that TF Serving's batching session
        (keyed by the *set* of tensors) runs together."""
        signature = self.signature(signature_name)
        keys = list(output_filter)
        for i, key in enumerate(keys):
            if key not in signature.outputs:
                raise invalid(
                    f"output tensor alias not found in signature: {key} Outputs expected to be "
                    f"in the set {{{','.join(sorted(signature.outputs))}}}."
                )
            if key in keys[:i]:
                raise invalid(f"duplicate output tensor alias: {key}")
        return sorted(keys or signature.outputs)

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_keys: list[str],
        timed: bool = True,
    ) -> dict[str, np.ndarray]:
        """Run validated inputs; returns the requested outputs by alias. ``timed``: record the
        run for its request (a batch's run is recorded per request by the batching path)."""
        key = signature_key(signature_name)
        signature = self.signatures[key]
        in_keys = tuple(sorted(inputs))
        out_keys = tuple(output_keys)
        call = self._callables.get((key, in_keys, out_keys))
        if call is None:
            fetches = [signature.outputs[k].name for k in out_keys]
            feeds = [signature.inputs[k].name for k in in_keys]
            call = _make_callable(self.session, feeds, fetches)
            self._callables[(key, in_keys, out_keys)] = call
        start = time.perf_counter()
        try:
            results = call(*(inputs[k] for k in in_keys))
        except tf.errors.InvalidArgumentError as error:
            raise invalid(error.message) from error
        elapsed = time.perf_counter() - start
        if timed:
            self.record_run(elapsed)
        previous = self.typical_run_s
        self.typical_run_s = elapsed if previous == float("inf") else 0.9 * previous + 0.1 * elapsed
        return dict(zip(out_keys, results, strict=True))


def _make_callable(session: tf.compat.v1.Session, feeds: list[str], fetches: list[str]) -> Any:
    """A Session callable over tensor names: ``TF_SessionMakeCallable``, the C API's equivalent
    of ``Session::MakeCallable``, which skips ``Session.run``'s per-call Python feed handling."""
    make = getattr(session, "_make_callable_from_options", None)
    if make is None:  # pragma: no cover - older or newer TensorFlow without the fast path
        return session.make_callable(fetches, feed_list=feeds)
    return make(config_pb2.CallableOptions(feed=feeds, fetch=fetches))


def read_warmup_requests(path: Path) -> list[bytes] | None:
    """The serialized ``PredictionLog`` records of a version's warmup file (None if absent)."""
    file = path / contract.WARMUP_FILE
    if not file.exists():
        return None
    records = []
    for record in tf.data.TFRecordDataset(str(file)):
        records.append(record.numpy())
        if len(records) > MAX_WARMUP_RECORDS:
            raise ValueError(
                f"{file} has more than {MAX_WARMUP_RECORDS} warmup records (TF Serving's limit)"
            )
    return records
