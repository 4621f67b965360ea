"""What a served model's ``serving_default`` signature takes, read from its ``SignatureDefMap``
(the metadata ``GetModelMetadata`` answers), and the error for a model outside the contract."""

from __future__ import annotations

from dataclasses import dataclass

from fdl import contract
from fdl.wire.tfs_pb2 import DataType, SignatureDefMap


@dataclass(frozen=True)
class InputSpec:
    """What a model's ``serving_default`` signature takes (from GetModelMetadata)."""

    version: int
    input_key: str
    dtype: str
    shape: tuple[int, ...]  # -1 for unknown dimensions, batch first
    # The preprocessing profile the version was trained for, as its metadata.json records it
    # (contract.PROFILE_KEY); None when it records none or cannot be read (api/metadata_cache.py).
    profile: str | None = None

    @property
    def height(self) -> int:
        return self.shape[1] if len(self.shape) == 4 else -1

    @property
    def width(self) -> int:
        return self.shape[2] if len(self.shape) == 4 else -1

    @property
    def channels(self) -> int:
        return self.shape[3] if len(self.shape) == 4 else -1


class ModelContractError(Exception):
    """The served model does not look like an image classifier (see :mod:`fdl.contract`)."""


def input_spec_of(signatures: SignatureDefMap, model: str, version: int) -> InputSpec:
    """The input of the ``serving_default`` signature in ``signatures``.

    Args:
        signatures: a model version's signatures, as GetModelMetadata answers them.
        model: the model's name, for error messages.
        version: the version the signatures belong to.

    Returns:
        Its input key (``images`` when present, else the first by name), dtype and shape.

    Raises:
        ModelContractError: there is no ``serving_default`` signature, or it has no input.
    """
    if contract.SIGNATURE_NAME not in signatures.signature_def:
        raise ModelContractError(f"model {model} has no '{contract.SIGNATURE_NAME}' signature")
    signature = signatures.signature_def[contract.SIGNATURE_NAME]
    if not signature.inputs:
        raise ModelContractError(f"model {model}'s signature has no inputs")
    key = contract.INPUT_KEY if contract.INPUT_KEY in signature.inputs else min(signature.inputs)
    info = signature.inputs[key]
    return InputSpec(
        version=version,
        input_key=key,
        dtype=DataType.Name(info.dtype),
        shape=tuple(int(d.size) for d in info.tensor_shape.dim),
    )
