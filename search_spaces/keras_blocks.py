"""Keras 3 functional builders for the block grammar: `build(spec) -> keras.Model`.

Ops follow MnasNet (arXiv:1807.11626): regular conv, depthwise-separable conv (SepConv) and the
inverted-bottleneck MBConv of MobileNetV2 (arXiv:1801.04381), each with optional squeeze-excite
(reduction = ratio x block-input channels, as in MnasNet's code) and the searched skip op, and the
MobileViT block (Mehta & Rastegari, arXiv:2110.02178) with multi-head self-attention or external
attention (Guo et al., arXiv:2105.02358).
Every layer is named ``b{block}_{repeat}_{role}`` so TFLite graphs and weights stay legible.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from search_spaces.spec import ArchSpec, BlockSpec, validate

#: CIFAR-10 training-set statistics (per channel, pixels in [0, 255]); the model normalises its
#: own input so that deployed models take raw pixels.
CIFAR_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)
BN_EPSILON = 1e-3


def conv_init() -> keras.initializers.Initializer:
    """He init over fan-out, as in MnasNet's code: keeps activations at unit scale through depth,
    which short proxy training needs (Keras' glorot default shrinks them layer after layer).
    A new instance per layer: an unseeded Keras initializer fixes its seed when constructed, so
    one shared instance would give every same-shaped kernel the same values."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")


@keras.saving.register_keras_serializable(package="nas")
class FusedBatchNormalization(layers.BatchNormalization):
    """BatchNormalization over NHWC feature maps as one `FusedBatchNormV3` op (TensorFlow backend).

    Why: Keras' layer emits ~15 ops per use (moments, casts, two moving-average updates) and as
    many again in its gradient; for a ~50-BatchNorm proxy model that was most of the first step's
    graph. Fused, a proxy trial's first step took 1.7 s instead of 4.0 s (median of 5 trials) and
    training ran 1.34x faster side by side (bench/trial_cost.py). Same variables and
    the same inference graph (TFLite folds it into the convolution). One difference: the moving
    variance averages the batch variance with Bessel's correction (n/(n-1), n = batch x height x
    width >= 256 here), where Keras' layer uses the biased one."""

    def call(self, inputs, training=None, mask=None):
        import tensorflow as tf

        if len(inputs.shape) != 4 or self.axis not in (-1, 3) or not (self.center and self.scale):
            return super().call(inputs, training=training, mask=mask)
        training = bool(training and self.trainable)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            self.gamma,
            self.beta,
            mean=self.moving_mean,
            variance=self.moving_variance,
            epsilon=self.epsilon,
            is_training=training,
            # training: the op returns the updated moving averages
            exponential_avg_factor=1.0 - self.momentum if training else 1.0,
        )
        if training:
            self.moving_mean.assign(mean)
            self.moving_variance.assign(variance)
        return outputs


class _Ctx:
    """What every builder needs besides the block: naming prefix and BatchNorm settings."""

    def __init__(self, *, bn_momentum: float, fused_bn: bool = False):
        self.bn_momentum = bn_momentum
        self.bn_class = FusedBatchNormalization if fused_bn else layers.BatchNormalization

    def bn(self, name: str) -> layers.Layer:
        return self.bn_class(momentum=self.bn_momentum, epsilon=BN_EPSILON, name=name)


def _activation(x, act: str | None, name: str):
    if act is None:
        return x
    return layers.ReLU(name=f"{name}_relu")(x) if act == "relu" else layers.Activation(act, name=f"{name}_{act}")(x)


def _conv_bn(x, ctx: _Ctx, *, filters: int, kernel: int, stride: int, name: str, act: str | None = "relu"):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, kernel_initializer=conv_init(), name=name)(
        x
    )
    x = ctx.bn(f"{name}_bn")(x)
    return _activation(x, act, name)


def _depthwise_bn(x, ctx: _Ctx, *, kernel: int, stride: int, name: str, act: str = "relu"):
    x = layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, depthwise_initializer=conv_init(), name=name
    )(x)
    x = ctx.bn(f"{name}_bn")(x)
    return _activation(x, act, name)


def _squeeze_excite(x, *, in_ch: int, ratio: float, name: str):
    if not ratio:
        return x
    channels = x.shape[-1]
    reduced = max(1, int(in_ch * ratio))
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_squeeze")(x)
    s = layers.Conv2D(reduced, 1, activation="relu", name=f"{name}_se_reduce")(s)
    s = layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_se_expand")(s)
    return layers.Multiply(name=f"{name}_se_excite")([x, s])


def _conv_layer(x, block: BlockSpec, ctx: _Ctx, *, stride: int, name: str, act: str = "relu"):
    in_ch = x.shape[-1]
    x = _conv_bn(x, ctx, filters=block.out_ch, kernel=block.kernel, stride=stride, name=f"{name}_conv", act=act)
    return _squeeze_excite(x, in_ch=in_ch, ratio=block.se, name=name)


def _dsconv_layer(x, block: BlockSpec, ctx: _Ctx, *, stride: int, name: str, act: str = "relu"):
    in_ch = x.shape[-1]
    x = _depthwise_bn(x, ctx, kernel=block.kernel, stride=stride, name=f"{name}_dw", act=act)
    x = _squeeze_excite(x, in_ch=in_ch, ratio=block.se, name=name)
    return _conv_bn(x, ctx, filters=block.out_ch, kernel=1, stride=1, name=f"{name}_project", act=None)


def _mbconv_layer(x, block: BlockSpec, ctx: _Ctx, *, stride: int, name: str, act: str = "relu"):
    in_ch = x.shape[-1]
    if block.expand != 1:
        x = _conv_bn(x, ctx, filters=in_ch * block.expand, kernel=1, stride=1, name=f"{name}_expand", act=act)
    x = _depthwise_bn(x, ctx, kernel=block.kernel, stride=stride, name=f"{name}_dw", act=act)
    x = _squeeze_excite(x, in_ch=in_ch, ratio=block.se, name=name)
    return _conv_bn(x, ctx, filters=block.out_ch, kernel=1, stride=1, name=f"{name}_project", act=None)


# -- MobileViT ---------------------------------------------------------------------------------


def unfold(x, patch: int):
    """[B, H, W, d] -> [B*p*p, N, d]: row k holds pixel position k of every one of the N patches,
    so attention runs across patches for each position (the paper's p*p-fold cheaper scheme)."""
    h, w, d = x.shape[1:]
    x = ops.reshape(x, (-1, h // patch, patch, w // patch, patch, d))
    x = ops.transpose(x, (0, 2, 4, 1, 3, 5))
    return ops.reshape(x, (-1, (h // patch) * (w // patch), d))


def fold(x, patch: int, *, height: int, width: int):
    """Inverse of `unfold`."""
    d = x.shape[-1]
    x = ops.reshape(x, (-1, patch, patch, height // patch, width // patch, d))
    x = ops.transpose(x, (0, 3, 1, 4, 2, 5))
    return ops.reshape(x, (-1, height, width, d))


def _split_heads(x, heads: int):
    tokens, dim = x.shape[1:]
    return ops.transpose(ops.reshape(x, (-1, tokens, heads, dim // heads)), (0, 2, 1, 3))


def _merge_heads(x):
    heads, tokens, head_dim = x.shape[1:]
    return ops.reshape(ops.transpose(x, (0, 2, 1, 3)), (-1, tokens, heads * head_dim))


def _self_attention(x, block: BlockSpec, *, name: str):
    """Multi-head scaled dot-product self-attention over the tokens (quadratic in N)."""
    q, k, v = (_split_heads(layers.Dense(block.dim, name=f"{name}_{role}")(x), block.heads) for role in "qkv")
    scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (block.dim // block.heads) ** -0.5
    out = ops.matmul(ops.softmax(scores, axis=-1), v)
    return layers.Dense(block.dim, name=f"{name}_out")(_merge_heads(out))


def _external_attention(x, block: BlockSpec, *, name: str):
    """EANet's multi-head external attention: two learned memories M_k, M_v of S units shared by
    all heads (a bias-free Dense over the head dimension is exactly that); softmax over the
    tokens, then l1-normalisation over the memory units. Linear in N."""
    q = _split_heads(layers.Dense(block.dim, name=f"{name}_q")(x), block.heads)
    attention = layers.Dense(block.memory, use_bias=False, name=f"{name}_memory_k")(q)
    attention = ops.softmax(attention, axis=2)
    attention = attention / (ops.sum(attention, axis=-1, keepdims=True) + 1e-9)
    out = layers.Dense(block.dim // block.heads, use_bias=False, name=f"{name}_memory_v")(attention)
    return layers.Dense(block.dim, name=f"{name}_out")(_merge_heads(out))


ATTENTION_BUILDERS = {"mhsa": _self_attention, "external": _external_attention}


def _transformer_layer(x, block: BlockSpec, *, name: str):
    """Pre-norm transformer layer: x + Attn(LN(x)), then x + MLP(LN(x)) with SiLU."""
    y = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_ln1")(x)
    x = layers.Add(name=f"{name}_attn_add")([x, ATTENTION_BUILDERS[block.attention](y, block, name=f"{name}_attn")])
    y = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_ln2")(x)
    y = layers.Dense(block.dim * block.mlp, activation="silu", name=f"{name}_mlp1")(y)
    y = layers.Dense(block.dim, name=f"{name}_mlp2")(y)
    return layers.Add(name=f"{name}_mlp_add")([x, y])


def _mobilevit_layer(x, block: BlockSpec, ctx: _Ctx, *, stride: int, name: str):
    """An MBConv layer (which may stride), then the MobileViT block: local kxk conv, 1x1 to the
    transformer width, unfold, `depth` transformer layers, LayerNorm, fold, 1x1 back, concat with
    the block input, kxk fusion conv. SiLU throughout, as in the paper."""
    x = _shortcut(
        x,
        _mbconv_layer(x, block, ctx, stride=stride, name=f"{name}_mv2", act="silu"),
        block,
        ctx,
        stride=stride,
        name=f"{name}_mv2",
    )
    local = _conv_bn(x, ctx, filters=block.out_ch, kernel=block.kernel, stride=1, name=f"{name}_local", act="silu")
    tokens = layers.Conv2D(block.dim, 1, use_bias=False, kernel_initializer=conv_init(), name=f"{name}_to_tokens")(local)
    height, width = tokens.shape[1:3]
    tokens = unfold(tokens, block.patch)
    for depth in range(block.depth):
        tokens = _transformer_layer(tokens, block, name=f"{name}_t{depth}")
    tokens = layers.LayerNormalization(epsilon=1e-5, name=f"{name}_ln")(tokens)
    y = fold(tokens, block.patch, height=height, width=width)
    y = _conv_bn(y, ctx, filters=block.out_ch, kernel=1, stride=1, name=f"{name}_from_tokens", act="silu")
    y = layers.Concatenate(name=f"{name}_concat")([x, y])
    return _conv_bn(y, ctx, filters=block.out_ch, kernel=block.kernel, stride=1, name=f"{name}_fuse", act="silu")


LAYER_BUILDERS = {"conv": _conv_layer, "dsconv": _dsconv_layer, "mbconv": _mbconv_layer, "mobilevit": _mobilevit_layer}
#: ops whose builder applies its own shortcuts
SELF_CONTAINED = frozenset({"mobilevit"})


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
            shortcut = _conv_bn(shortcut, ctx, filters=outputs.shape[-1], kernel=1, stride=1, name=f"{name}_skip_proj", act=None)
    return layers.Add(name=f"{name}_add")([outputs, shortcut])


def _apply_block(x, block: BlockSpec, ctx: _Ctx, *, index: int):
    for repeat in range(block.repeats):
        name = f"b{index}_{repeat}"
        stride = block.stride if repeat == 0 else 1
        y = LAYER_BUILDERS[block.op](x, block, ctx, stride=stride, name=name)
        x = y if block.op in SELF_CONTAINED else _shortcut(x, y, block, ctx, stride=stride, name=name)
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
    fused_bn: bool = False,
) -> keras.Model:
    """The Keras model of `spec`: raw pixels in [0, 255] in, class logits out.

    `fused_bn`: `FusedBatchNormalization` (TensorFlow only) for faster training. Its variables
    are Keras' own, so `with_keras_batchnorm` gives the same model with Keras' layer: what is
    delivered loads without this package."""
    validate(spec, input_shape[0])
    ctx = _Ctx(bn_momentum=bn_momentum, fused_bn=fused_bn)
    inputs = keras.Input(shape=input_shape, name="image")
    variance = [s * s for s in CIFAR_STD]
    x = layers.Normalization(mean=CIFAR_MEAN, variance=variance, name="normalize")(inputs)
    *body, head = spec.blocks
    for index, block in enumerate(body):
        x = _apply_block(x, block, ctx, index=index)
    outputs = _apply_head(x, head, ctx, index=len(body), num_classes=num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name=f"arch_{spec.arch_id}")


def with_keras_batchnorm(model: keras.Model, spec: ArchSpec, **build_args) -> keras.Model:
    """`model` (built from `spec` with `fused_bn=True`) rebuilt with Keras' BatchNormalization
    and the same weights."""
    plain = build(spec, **build_args, fused_bn=False)
    plain.set_weights(model.get_weights())
    return plain
