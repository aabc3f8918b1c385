"""Keras 3 functional builders for the block grammar: `build(spec) -> keras.Model`.

Ops follow MnasNet (arXiv:1807.11626): regular conv, depthwise-separable conv (SepConv) and the
inverted-bottleneck MBConv of MobileNetV2 (arXiv:1801.04381), each with optional squeeze-excite
(reduction = ratio x block-input channels, as in MnasNet's code) and the searched skip op.
Every layer is named ``b{block}_{repeat}_{role}`` so TFLite graphs and weights stay legible.
"""

from __future__ import annotations

import keras
from keras import layers

from search_spaces.spec import ArchSpec, BlockSpec, validate

#: CIFAR-10 training-set statistics (per channel, pixels in [0, 255]); the model normalises its
#: own input so that deployed models take raw pixels.
CIFAR_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)
BN_EPSILON = 1e-3
#: He init over fan-out, as in MnasNet's code: keeps activations at unit scale through depth,
#: which short proxy training needs (Keras' glorot default shrinks them layer after layer).
CONV_INIT = keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")


class _Ctx:
    """What every builder needs besides the block: naming prefix and BatchNorm settings."""

    def __init__(self, *, bn_momentum: float):
        self.bn_momentum = bn_momentum

    def bn(self, name: str) -> layers.Layer:
        return layers.BatchNormalization(momentum=self.bn_momentum, epsilon=BN_EPSILON, name=name)


def _conv_bn(x, ctx: _Ctx, *, filters: int, kernel: int, stride: int, name: str, act: bool = True):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, kernel_initializer=CONV_INIT, name=name)(x)
    x = ctx.bn(f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if act else x


def _depthwise_bn(x, ctx: _Ctx, *, kernel: int, stride: int, name: str):
    x = layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, depthwise_initializer=CONV_INIT, name=name
    )(x)
    x = ctx.bn(f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _squeeze_excite(x, *, in_ch: int, ratio: float, name: str):
    if not ratio:
        return x
    channels = x.shape[-1]
    reduced = max(1, int(in_ch * ratio))
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_squeeze")(x)
    s = layers.Conv2D(reduced, 1, activation="relu", name=f"{name}_se_reduce")(s)
    s = layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_se_expand")(s)
    return layers.Multiply(name=f"{name}_se_excite")([x, s])


def _conv_layer(x, block: BlockSpec, ctx: _Ctx, *, stride: int, name: str):
    in_ch = x.shape[-1]
    x = _conv_bn(x, ctx, filters=block.out_ch, kernel=block.kernel, stride=stride, name=f"{name}_conv")
    return _squeeze_excite(x, in_ch=in_ch, ratio=block.se, name=name)


def _dsconv_layer(x, block: BlockSpec, ctx: _Ctx, *, stride: int, name: str):
    in_ch = x.shape[-1]
    x = _depthwise_bn(x, ctx, kernel=block.kernel, stride=stride, name=f"{name}_dw")
    x = _squeeze_excite(x, in_ch=in_ch, ratio=block.se, name=name)
    return _conv_bn(x, ctx, filters=block.out_ch, kernel=1, stride=1, name=f"{name}_project", act=False)


def _mbconv_layer(x, block: BlockSpec, ctx: _Ctx, *, stride: int, name: str):
    in_ch = x.shape[-1]
    if block.expand != 1:
        x = _conv_bn(x, ctx, filters=in_ch * block.expand, kernel=1, stride=1, name=f"{name}_expand")
    x = _depthwise_bn(x, ctx, kernel=block.kernel, stride=stride, name=f"{name}_dw")
    x = _squeeze_excite(x, in_ch=in_ch, ratio=block.se, name=name)
    return _conv_bn(x, ctx, filters=block.out_ch, kernel=1, stride=1, name=f"{name}_project", act=False)


LAYER_BUILDERS = {"conv": _conv_layer, "dsconv": _dsconv_layer, "mbconv": _mbconv_layer}


def _shortcut(inputs, outputs, block: BlockSpec, ctx: _Ctx, *, stride: int, name: str):
    """The block's skip op applied to one layer: identity where shapes match; `pool` also
    bridges a shape change with average pooling and a 1x1 projection."""
    same_shape = stride == 1 and inputs.shape[-1] == outputs.shape[-1]
    if block.skip == "none" or (block.skip == "identity" and not same_shape):
        return outputs
    shortcut = inputs
    if not same_shape:
        if stride > 1:
            shortcut = layers.AveragePooling2D(stride, padding="same", name=f"{name}_skip_pool")(shortcut)
        if shortcut.shape[-1] != outputs.shape[-1]:
            shortcut = _conv_bn(shortcut, ctx, filters=outputs.shape[-1], kernel=1, stride=1, name=f"{name}_skip_proj", act=False)
    return layers.Add(name=f"{name}_add")([outputs, shortcut])


def _apply_block(x, block: BlockSpec, ctx: _Ctx, *, index: int):
    for repeat in range(block.repeats):
        name = f"b{index}_{repeat}"
        stride = block.stride if repeat == 0 else 1
        y = LAYER_BUILDERS[block.op](x, block, ctx, stride=stride, name=name)
        x = _shortcut(x, y, block, ctx, stride=stride, name=name)
    return x


def _apply_head(x, block: BlockSpec, ctx: _Ctx, *, index: int, num_classes: int, dropout: float):
    x = _conv_bn(x, ctx, filters=block.out_ch, kernel=1, stride=1, name=f"b{index}_head")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return layers.Dense(num_classes, name="logits")(x)


def build(
    spec: ArchSpec,
    *,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    bn_momentum: float = 0.99,
    dropout: float = 0.2,
) -> keras.Model:
    """The Keras model of `spec`: raw pixels in [0, 255] in, class logits out."""
    validate(spec, input_shape[0])
    ctx = _Ctx(bn_momentum=bn_momentum)
    inputs = keras.Input(shape=input_shape, name="image")
    variance = [s * s for s in CIFAR_STD]
    x = layers.Normalization(mean=CIFAR_MEAN, variance=variance, name="normalize")(inputs)
    *body, head = spec.blocks
    for index, block in enumerate(body):
        x = _apply_block(x, block, ctx, index=index)
    outputs = _apply_head(x, head, ctx, index=len(body), num_classes=num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name=f"arch_{spec.arch_id}")
