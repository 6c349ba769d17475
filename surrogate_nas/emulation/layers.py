"""The Keras layers of the approximate twin: `AxConv2D`/`AxDense` (quantize, look up every
product, dequantize, as tf-approximate's FakeApproxConv2D) and `FoldedBatchNorm`."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from surrogate_nas.emulation.decomposition import Decomposition, as_lut, decompose
from surrogate_nas.emulation.ops import (
    GATHER_RANK_THRESHOLD,
    _pair,
    approx_conv_core,
    factor_error,
    gathered_error,
    per_tap_table,
)
from surrogate_nas.emulation.quantization import nudge, output_geometry, quantize_codes
from surrogate_nas.emulation.table_gradient import error_gradient_term, gradient_factors
from surrogate_nas.multipliers.tables import error_table, exact_table

QUANTIZATION_MODES = ("calibrated", "batch")


class _Tables:
    """Holds the factor variables outside Keras' weight tracking: they are not weights
    (never trained or saved) and their rank dimension changes when the multiplier does."""

    def __init__(self):
        self.u = tf.Variable(np.zeros((256, 0), np.float32), shape=tf.TensorShape([256, None]), trainable=False)
        self.v = tf.Variable(np.zeros((256, 0), np.float32), shape=tf.TensorShape([256, None]), trainable=False)
        # Gathered path for high-rank tables: the error table, and the per-tap table
        # (rows k*256 + a, one column per output channel) built from it for the kernel
        # codes in `seen_codes`; rebuilt inside the graph whenever the kernel changes.
        self.err = tf.Variable(np.zeros((256, 256), np.float32), trainable=False)
        self.table = tf.Variable(np.zeros((0, 0), np.float32), shape=tf.TensorShape([None, None]), trainable=False)
        self.seen_codes = None  # created when the layer is built (kernel size known)
        self.use_table = tf.Variable(False, trainable=False)
        self.grad = None  # the table-gradient factors (u, du, v, dv), when set

    def build(self, kernel_size: int) -> None:
        self.seen_codes = tf.Variable(np.full((kernel_size,), -1.0, np.float32), trainable=False)

    def mark_stale(self) -> None:
        if self.seen_codes is not None:
            self.seen_codes.assign(tf.fill(tf.shape(self.seen_codes), -1.0))

    def gathered(self, a, wc, conv_strides):
        codes = tf.reshape(wc, [-1])
        same = tf.reduce_all(tf.equal(self.seen_codes, codes))

        def rebuild():
            table = per_tap_table(self.err, wc)
            with tf.control_dependencies([self.table.assign(table), self.seen_codes.assign(codes)]):
                return tf.identity(table)

        table = tf.cond(same, self.table.read_value, rebuild)
        return gathered_error(a, table, wc.shape, conv_strides)


@keras.saving.register_keras_serializable(package="surrogate_nas")
class AxConv2D(keras.layers.Layer):
    """Drop-in `Conv2D` whose products go through an approximate multiplier's table.

    Layer semantics follow tf-approximate's `FakeApproxConv2D`: input and kernel are
    fake-quantized to 8 bits (`tf.quantization.fake_quant_with_min_max_vars`) with
    their ranges, then the table-based op runs, then bias and activation.

    quantization="calibrated" (default) uses a fixed input range per layer, measured
    once on calibration images, so an image's result does not depend on which other
    images share its batch, nor on the batch size: what a deployed accelerator does and
    what a search needs for reproducible accuracies. "batch" takes the range of each
    batch, as tf-approximate's layer does.

    `set_multiplier` swaps the table in place (variables with a free rank dimension),
    so a compiled model is neither rebuilt nor retraced.
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        activation=None,
        use_bias: bool = True,
        quantization: str = "calibrated",
        input_range=None,
        multiplier: str | None = None,
        max_rank: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if quantization not in QUANTIZATION_MODES:
            raise ValueError(f"quantization: expected one of {QUANTIZATION_MODES}, got {quantization!r}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = str(padding).lower()
        if self.padding not in ("same", "valid"):
            raise ValueError(f"padding: expected 'same' or 'valid', got {padding!r}")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.quantization = quantization
        self.initial_input_range = None if input_range is None else tuple(float(v) for v in input_range)
        self.max_rank = max_rank
        self.multiplier = multiplier
        self._tables = _Tables()
        self._lut = exact_table()
        self.rank = 0
        self.compensation = None
        self.table_gradient = None  # (rank, halfwidth): backward through the table, see set_table_gradient
        if multiplier is not None:
            self.set_multiplier(multiplier, max_rank=max_rank)

    def build(self, input_shape):
        self._build_weights(input_shape)

    def _build_weights(self, input_shape):
        cin = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, cin, self.filters), initializer="glorot_uniform"
        )
        self._tables.build(int(np.prod(self.kernel.shape)))
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None
        if self.quantization == "calibrated":
            init = self.initial_input_range or (0.0, 1.0)
            self.input_range = self.add_weight(
                name="input_range",
                shape=(2,),
                initializer=keras.initializers.Constant(np.array(init, np.float32)),
                trainable=False,
            )
        # Compensation offsets (see surrogate_nas.multipliers.compensation), subtracted from the output,
        # and the table the layer multiplies with (weight columns already remapped by a
        # tuning compensation): weights, so that a saved model is the whole design.
        self.bias_offset = self.add_weight(name="bias_offset", shape=(self.filters,), initializer="zeros", trainable=False)
        self.table = self.add_weight(
            name="table", shape=(256, 256), dtype="int32", trainable=False,
            initializer=keras.initializers.Constant(self._lut.astype(np.int32)),
        )

    def load_own_variables(self, store):
        """After `keras.models.load_model`: rebuild the table factors from the saved table."""
        super().load_own_variables(store)
        if hasattr(self, "table"):
            self._set_table(self.table.numpy().astype(np.uint16), self.max_rank)

    def set_multiplier(
        self, lut=None, max_rank: int | None = None, input_weights=None, kernel_weights=None, compensation=None
    ) -> Decomposition:
        """Use table `lut` (None = exact); with `max_rank`, the truncated mode.

        `compensation` (a `surrogate_nas.multipliers.compensation.Compensation`) remaps the table's
        weight columns and sets the per-channel bias offsets; None clears both.
        High-rank tables in exact mode use the gathered path; its per-tap table follows
        the kernel (rebuilt in the graph on the first call after the weights change).
        """
        if lut is None:
            lut = exact_table()
            name = None
        else:
            name = getattr(lut, "name", None) or (str(lut) if isinstance(lut, (str, Path)) else "custom")
        path = str(lut) if isinstance(lut, (str, Path)) else None
        lut = as_lut(lut)
        self.compensation = compensation
        if compensation is not None:
            lut = as_lut(compensation.table(lut))
        if self.built:
            offset = None if compensation is None else compensation.bias_offset
            self.bias_offset.assign(np.zeros(self.filters, np.float32) if offset is None else np.asarray(offset, np.float32))
            self.table.assign(lut.astype(np.int32))
        elif compensation is not None and compensation.bias_offset is not None:
            raise ValueError(f"layer {self.name}: build the layer before setting bias offsets")
        dec = self._set_table(lut, max_rank, input_weights, kernel_weights)
        self.multiplier = path or name
        return dec

    def _set_table(self, lut: np.ndarray, max_rank=None, input_weights=None, kernel_weights=None) -> Decomposition:
        """Point the op at `lut` (factors, or the error table for the gathered path)."""
        self._lut = lut
        dec = decompose(lut, max_rank=max_rank, input_weights=input_weights, kernel_weights=kernel_weights)
        gathered = max_rank is None and dec.rank > GATHER_RANK_THRESHOLD
        tables = self._tables
        tables.mark_stale()
        tables.table.assign(np.zeros((0, 0), np.float32))
        if gathered:
            tables.err.assign(error_table(lut).astype(np.float32))
            tables.u.assign(np.zeros((256, 0), np.float32))
            tables.v.assign(np.zeros((256, 0), np.float32))
        else:
            tables.u.assign(dec.u)
            tables.v.assign(dec.v)
        tables.use_table.assign(gathered)
        self.max_rank = max_rank
        self.rank = dec.rank
        if self.table_gradient is not None:
            self._assign_grad_factors()
        return dec

    def set_table_gradient(self, rank: int | None, halfwidth: int = 4) -> None:
        """Back-propagate through the table's leading `rank` error components
        (`emulation.table_gradient`) instead of the straight-through estimator; None: the
        STE. Takes effect when the training step is next traced (set it before `compile`)."""
        if rank is None:
            self.table_gradient = self._tables.grad = None
            return
        self.table_gradient = (int(rank), int(halfwidth))
        self._tables.grad = [tf.Variable(np.zeros((256, int(rank)), np.float32), trainable=False) for _ in range(4)]
        self._assign_grad_factors()

    def _assign_grad_factors(self) -> None:
        f = gradient_factors(self._lut, *self.table_gradient)
        for var, value in zip(self._tables.grad, (f.u, f.du, f.v, f.dv)):
            var.assign(np.pad(value, ((0, 0), (0, var.shape[1] - value.shape[1]))))  # an exact-rank-0 table: zeros

    def kernel_codes(self) -> np.ndarray:
        """The 8-bit codes of the kernel as the op quantizes it (int, HWIO)."""
        kernel = tf.convert_to_tensor(self.kernel)
        k_min, k_max = tf.reduce_min(kernel), tf.reduce_max(kernel)
        k_q = tf.quantization.fake_quant_with_min_max_vars(kernel, k_min, k_max, num_bits=8)
        scale, inv, m, zp = nudge(k_min, k_max)
        return quantize_codes(k_q, inv, m, zp, scale).numpy().astype(np.int64)

    def scales(self) -> tuple[float, float]:
        """(input scale, kernel scale) of the calibrated quantization."""
        lo, hi = (float(v) for v in self.input_range.numpy())
        kernel = self.kernel.numpy()
        s_in = nudge(tf.constant(lo), tf.constant(hi))[0]
        s_w = nudge(tf.reduce_min(kernel), tf.reduce_max(kernel))[0]
        return float(s_in), float(s_w)

    def set_input_range(self, low: float, high: float) -> None:
        if self.quantization != "calibrated":
            raise ValueError(f"layer {self.name}: input_range only applies to calibrated quantization")
        if not low <= high:
            raise ValueError(f"layer {self.name}: input range min {low} > max {high}")
        self.input_range.assign(np.array([low, high], np.float32))

    def call(self, inputs):
        inputs = tf.cast(inputs, tf.float32)
        if self.quantization == "batch":
            in_min, in_max = tf.reduce_min(inputs), tf.reduce_max(inputs)
        else:
            in_min, in_max = self.input_range[0], self.input_range[1]
        kernel = tf.convert_to_tensor(self.kernel)
        k_min, k_max = tf.reduce_min(kernel), tf.reduce_max(kernel)
        x_q = tf.quantization.fake_quant_with_min_max_vars(inputs, in_min, in_max, num_bits=8)
        k_q = tf.quantization.fake_quant_with_min_max_vars(kernel, k_min, k_max, num_bits=8)
        tables = self._tables

        def error_fn(a, wc, conv_strides):
            return tf.cond(
                tables.use_table,
                lambda: tables.gathered(a, wc, conv_strides),
                lambda: factor_error(a, wc, tables.u.read_value(), tables.v.read_value(), conv_strides),
            )

        strides, padding = self.strides, self.padding.upper()
        factors = self._tables.grad

        @tf.custom_gradient
        def table_conv(x_q, k_q):
            """Forward: the table emulation. Backward: the straight-through estimator of
            tf-approximate, TorchApprox and AdaPT, the gradient of the float convolution
            of the fake-quantized operands (fake quantization passes gradients inside
            its range), plus, with `set_table_gradient`, the table's error derivative."""
            y = approx_conv_core(x_q, k_q, (in_min, in_max), (k_min, k_max), strides, padding, error_fn)

            def grad(dy, variables=None):
                s4 = [1, strides[0], strides[1], 1]
                dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x_q), filter=k_q, out_backprop=dy,
                                                    strides=s4, padding=padding)
                dk = tf.raw_ops.Conv2DBackpropFilter(input=x_q, filter_sizes=tf.shape(k_q), out_backprop=dy,
                                                     strides=s4, padding=padding)
                if factors is not None:
                    with tf.GradientTape() as tape:
                        tape.watch([x_q, k_q])
                        e = error_gradient_term(x_q, k_q, (in_min, in_max), (k_min, k_max), strides, padding,
                                                *(f.read_value() for f in factors))
                    ex, ek = tape.gradient(e, [x_q, k_q], output_gradients=dy)
                    dx, dk = dx + ex, dk + ek
                return ((dx, dk), [None] * len(variables)) if variables else (dx, dk)

            return y, grad

        y = table_conv(x_q, k_q) - self.bias_offset
        if self.use_bias:
            y = y + self.bias
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        out_h = output_geometry(h, self.kernel_size[0], self.strides[0], self.padding.upper())[0]
        out_w = output_geometry(w, self.kernel_size[1], self.strides[1], self.padding.upper())[0]
        return (n, out_h, out_w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            quantization=self.quantization,
            input_range=self.initial_input_range,
            multiplier=self.multiplier if self.multiplier and Path(self.multiplier).suffix == ".bin" else None,
            max_rank=self.max_rank,
        )
        return config

    @classmethod
    def from_conv2d(cls, conv: keras.layers.Conv2D, **kwargs) -> "AxConv2D":
        """A built AxConv2D carrying a trained Conv2D's weights."""
        if tuple(conv.dilation_rate) != (1, 1) or conv.groups != 1:
            raise ValueError(f"layer {conv.name}: dilation and groups are not supported by AxConv2D")
        layer = cls(
            conv.filters,
            conv.kernel_size,
            strides=conv.strides,
            padding=conv.padding,
            activation=keras.activations.serialize(conv.activation),
            use_bias=conv.use_bias,
            name=kwargs.pop("name", conv.name),
            **kwargs,
        )
        layer.build(conv.input.shape)
        layer.kernel.assign(conv.kernel)
        if conv.use_bias:
            layer.bias.assign(conv.bias)
        return layer


@keras.saving.register_keras_serializable(package="surrogate_nas")
class AxDense(AxConv2D):
    """Drop-in `Dense` with the same table semantics as `AxConv2D`: a dense layer is a
    1x1 convolution on a 1x1 image, so each row of the input (any leading axes) is
    fake-quantized with the layer's input range, the kernel with its own range, and
    every product is looked up in the table. The kernel is stored as (1, 1, cin, units)."""

    def __init__(self, units: int, activation=None, use_bias: bool = True, quantization: str = "calibrated",
                 input_range=None, multiplier: str | None = None, max_rank: int | None = None, **kwargs):
        for key in ("filters", "kernel_size", "strides", "padding"):  # AxConv2D's config keys
            kwargs.pop(key, None)
        super().__init__(units, (1, 1), activation=activation, use_bias=use_bias, quantization=quantization,
                         input_range=input_range, multiplier=multiplier, max_rank=max_rank, **kwargs)
        self.units = int(units)

    def call(self, inputs):
        inputs = tf.cast(inputs, tf.float32)
        cin = self.kernel.shape[2]
        rows = tf.reshape(inputs, [-1, 1, 1, cin])
        y = super().call(rows)
        return tf.reshape(y, tf.concat([tf.shape(inputs)[:-1], [self.units]], 0))

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        for key in ("filters", "kernel_size", "strides", "padding"):
            config.pop(key)
        config["units"] = self.units
        return config

    @classmethod
    def from_dense(cls, dense: keras.layers.Dense, **kwargs) -> "AxDense":
        """A built AxDense carrying a trained Dense's weights."""
        layer = cls(dense.units, activation=keras.activations.serialize(dense.activation), use_bias=dense.use_bias,
                    name=kwargs.pop("name", dense.name), **kwargs)
        layer.build((None, int(dense.kernel.shape[0])))
        layer.kernel.assign(np.asarray(dense.kernel).reshape(layer.kernel.shape))
        if dense.use_bias:
            layer.bias.assign(dense.bias)
        return layer


@keras.saving.register_keras_serializable(package="surrogate_nas")
class FoldedBatchNorm(keras.layers.Layer):
    """Where a twin's BatchNormalization was: it is folded into the preceding conv's kernel
    and bias, so this layer passes its input through (whatever the BatchNorm was called with)."""

    def call(self, inputs, *args, **kwargs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape
