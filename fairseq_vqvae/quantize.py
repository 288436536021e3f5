"""int8 inference for vqvae_nat (``--gen-int8``): dynamic int8 weights for the linear maps
where one-pass decoding spends its time on a CPU.

``torch.ao.nn.quantized.dynamic.Linear`` stores a layer's weights as int8 and quantizes each
input on the fly (per tensor): the feed-forward layers of every stack, the decompressor's
up-sampling maps, the latent predictor's output layer, and the vocabulary projection (the
tied target embedding). The attention projections stay fp32: fairseq's attention and the
latent predictor's cached steps read their weights directly (a quantized module has none to
read), and the length classifier and codebook stay fp32 (a length class or a code off by one
is a different translation). Written here, not taken from a library, because which layers
can be quantized is a property of this model; the quantized kernels are torch's own (fbgemm
or oneDNN).
"""

import warnings

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["quantize_int8", "is_int8"]


def _int8_linear(linear: nn.Linear) -> nn.Module:
    import torch.ao.nn.quantized.dynamic as dynamic
    from torch.ao.quantization import default_dynamic_qconfig

    linear.qconfig = default_dynamic_qconfig
    with warnings.catch_warnings():  # torch marks its quantized tensors as deprecated
        warnings.simplefilter("ignore", UserWarning)
        return dynamic.Linear.from_float(linear)


def _feed_forward_layers(model):
    stacks = [model.encoder.layers, model.decoder_layers, model.ae_layers]
    stacks.append(model.latent_predictor.layers)
    for stack in stacks:
        yield from stack


class Int8Projection(nn.Module):
    """The vocabulary projection ``F.linear(h, embedding.weight)`` with int8 weights."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        linear.weight.data.copy_(weight.detach().float())
        self.linear = _int8_linear(linear)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h.float())


def quantize_int8(model) -> None:
    """Turn ``model`` (a vqvae_nat in evaluation, on the CPU) into its int8 inference form, in
    place; a second call does nothing. Training it afterwards is refused."""
    if is_int8(model):
        return
    if next(model.parameters()).device.type != "cpu":
        raise ValueError(
            "--gen-int8 quantizes for the CPU: drop it on a GPU (use --fp16)"
        )
    model.eval()
    for layer in _feed_forward_layers(model):
        layer.fc1 = _int8_linear(layer.fc1)
        layer.fc2 = _int8_linear(layer.fc2)
    model.decompressor.expand = nn.ModuleList(
        _int8_linear(linear) for linear in model.decompressor.expand
    )
    predictor = model.latent_predictor
    predictor.output = _int8_linear(predictor.output)
    model.output_projection = Int8Projection(model.embed_target.weight)
    model.int8 = True


def is_int8(model) -> bool:
    return bool(getattr(model, "int8", False))


def project(model, h: torch.Tensor) -> torch.Tensor:
    """(B, L, C) decoder states -> token logits (B, L, V), int8 after ``quantize_int8``."""
    projection = getattr(model, "output_projection", None)
    if projection is not None:
        return projection(h).to(h.dtype)
    return F.linear(h, model.embed_target.weight)
