"""Which layers of a Keras model get a gene (conv, optionally dense) and what the energy
model needs to know about each (shapes, MACs)."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from surrogate_nas.emulation.layers import AxConv2D, AxDense
from surrogate_nas.errors import UserError
from surrogate_nas.genome import check_approximate


@dataclass(frozen=True)
class LayerInfo:
    """What the energy model, the surrogate and the reports need to know about one
    approximable layer."""

    name: str
    kind: str  # "conv" or "dense"
    input_shape: tuple
    output_shape: tuple
    kernel_size: tuple[int, int]
    macs: int  # multiplications per image


def _is_approx(layer) -> bool:
    return isinstance(layer, AxConv2D)


def _is_dense(layer) -> bool:
    return isinstance(layer, (keras.layers.Dense, AxDense))


def _graph(model: keras.Model):
    """The Functional graph behind a Sequential or Functional model."""
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise UserError(f"model {model.name}: a Sequential model without an input shape (add keras.Input(...) "
                            "as its first layer)")
        return functional
    if not isinstance(model, keras.Model) or not hasattr(model, "_run_through_graph"):
        raise UserError(f"model {getattr(model, 'name', model)}: a subclassed model cannot be rewritten; "
                        "save it as a Sequential or Functional model")
    return model


def _nodes(functional) -> list:
    """Every node of the graph, found from the outputs backwards."""
    seen: dict[int, object] = {}
    stack = list(functional.outputs)
    while stack:
        operation, node_index, _ = stack.pop()._keras_history
        if operation is None:
            continue
        node = operation._inbound_nodes[node_index]
        if id(node) not in seen:
            seen[id(node)] = node
            stack.extend(node.arguments.keras_tensors)
    return list(seen.values())


def _conv_problem(layer) -> str | None:
    """Why a conv-like layer cannot be emulated (None: it can)."""
    kind = type(layer).__name__
    if isinstance(layer, keras.layers.Conv2D) and type(layer) is keras.layers.Conv2D:
        if tuple(layer.dilation_rate) != (1, 1):
            return f"dilation_rate {tuple(layer.dilation_rate)} (only 1 is emulated)"
        if layer.groups != 1:
            return f"groups={layer.groups} (grouped convolution is not emulated)"
        if layer.data_format != "channels_last":
            return f"data_format={layer.data_format!r} (only channels_last is emulated)"
        if getattr(layer, "lora_enabled", False):
            return "LoRA weights (merge them first)"
        return None
    if "Conv" in kind:
        return f"{kind} is not emulated (only Conv2D and Dense layers are approximable)"
    return None


def approximable_layers(model: keras.Model, approximate: str = "conv", strict: bool = True) -> list:
    """The layers of a float model that get a gene, in model order: its `Conv2D`s (and
    `Dense`s with "conv+dense"). Unsupported layers are a `UserError` naming the layer;
    with `strict=False` a Dense that cannot be approximated is left out instead."""
    check_approximate(approximate, "approximate")
    functional = _graph(model)
    if len(functional.inputs) != 1 or len(functional.outputs) != 1:
        raise UserError(f"model {model.name}: has {len(functional.inputs)} inputs and {len(functional.outputs)} "
                        "outputs; expected one image input and one output of class scores")
    shape = tuple(functional.inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise UserError(f"model {model.name}: input shape {shape}; expected a fixed (height, width, channels)")
    calls: dict[int, int] = {}
    for node in _nodes(functional):
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
    layers = []
    for layer in model.layers:
        if _is_approx(layer):
            raise UserError(f"layer {layer.name} ({type(layer).__name__}): the model is already approximate; "
                            "pass the float model")
        if isinstance(layer, keras.Model):
            inner = [sub.name for sub in layer._flatten_layers(include_self=False)
                     if "Conv" in type(sub).__name__ or (approximate == "conv+dense" and _is_dense(sub))]
            if inner:
                raise UserError(f"layer {layer.name}: a nested model holding approximable layers ({', '.join(inner[:3])}); "
                                "flatten it into one Functional model")
            continue
        problem = _conv_problem(layer)
        if problem is not None:
            raise UserError(f"layer {layer.name}: {problem}")
        wanted = isinstance(layer, keras.layers.Conv2D) or (approximate == "conv+dense" and _is_dense(layer))
        if not wanted:
            continue
        if _is_dense(layer) and (getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None)):
            if strict:
                raise UserError(f"layer {layer.name}: a Dense with LoRA or quantized weights is not approximable")
            continue
        if calls.get(id(layer), 0) > 1:
            if strict or not _is_dense(layer):
                raise UserError(f"layer {layer.name}: used {calls[id(layer)]} times in the model; a shared "
                                f"{type(layer).__name__} is not supported")
            continue
        layers.append(layer)
    if not layers:
        raise UserError(f"model {model.name}: no Conv2D layer to approximate")
    return layers


def approx_layers(twin: keras.Model, names=None) -> list:
    """The `AxConv2D`/`AxDense` layers of a twin, in genome order (by `names` when given)."""
    if names is not None:
        return [twin.get_layer(name) for name in names]
    return [layer for layer in twin.layers if _is_approx(layer)]


def conv_layers(model: keras.Model) -> list:
    """The conv layers of a float model or a twin (`Conv2D` or `AxConv2D`), in model order."""
    return [layer for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, AxConv2D)) and not isinstance(layer, AxDense)]


def layer_info(model: keras.Model, approximate: str = "conv", layers=None) -> list[LayerInfo]:
    infos = []
    for layer in layers if layers is not None else approximable_layers(model, approximate):
        shape_in = tuple(int(d) for d in layer.input.shape[1:])
        shape_out = tuple(int(d) for d in layer.output.shape[1:])
        cin, cout = shape_in[-1], shape_out[-1]
        if _is_dense(layer):
            kind, (kh, kw) = "dense", (1, 1)
            positions = int(np.prod(shape_in[:-1], dtype=np.int64))  # 1 for a (batch, features) input
        else:
            kind, (kh, kw) = "conv", tuple(layer.kernel_size)
            positions = shape_out[0] * shape_out[1]
        infos.append(LayerInfo(layer.name, kind, shape_in, shape_out, (kh, kw), int(positions * cout * kh * kw * cin)))
    return infos
