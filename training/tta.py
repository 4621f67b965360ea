"""Flip test-time augmentation inside the model: at inference (``training=False``: evaluation,
``predict`` and the exported serving graph) the logits are the mean over the image and its
left-right mirror; training sees single images. For networks whose training data is flipped at
random (CIFAR-10's), so that the mirror is an image of the same class the network knows."""

from __future__ import annotations

import keras

LAYER_NAME = "flip_tta"


class FlipAveraged(keras.layers.Layer):
    """Runs ``net`` on the batch and, at inference, also on its mirror, averaging the logits."""

    def __init__(self, net: keras.Model, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = net

    def call(self, x, training=None):
        if training:
            return self.net(x, training=True)
        # One call on the batch and its mirror stacked: one pass through every layer, not two.
        both = keras.ops.concatenate([x, keras.ops.flip(x, axis=2)], axis=0)  # NHWC: 2 = width
        logits = self.net(both, training=False)
        count = keras.ops.shape(x)[0]
        return (logits[:count] + logits[count:]) / 2.0

    def compute_output_shape(self, input_shape):
        return self.net.compute_output_shape(input_shape)


def with_flip_tta(net: keras.Model, name: str) -> keras.Model:
    """``net`` (image in, logits out) wrapped in :class:`FlipAveraged` as the model ``name``."""
    inputs = keras.Input(shape=net.input_shape[1:], name="pixels")
    return keras.Model(inputs, FlipAveraged(net, name=LAYER_NAME)(inputs), name=name)


def network(model: keras.Model) -> keras.Model:
    """The network inside a flip-averaged model (the model itself when it has none)."""
    names = {layer.name for layer in model.layers}
    return model.get_layer(LAYER_NAME).net if LAYER_NAME in names else model
