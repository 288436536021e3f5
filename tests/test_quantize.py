"""--gen-int8: dynamic int8 weights for vqvae_nat's linear maps at inference on the CPU."""

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch.ao.nn.quantized import dynamic

from fairseq_vqvae.errors import OptionError

from conftest import train_a_little

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_generator import _translate  # noqa: E402


def _trained(build_vqvae, *flags, steps=30):
    """A tiny model trained a little (an untrained one's outputs are near ties)."""
    return train_a_little(build_vqvae("--dropout", "0", *flags), steps)


def test_int8_is_off_by_default(build_vqvae):
    built = build_vqvae()
    assert built.args.gen_int8 is False
    built.task.build_generator([built.model.eval()], built.args)
    assert not getattr(built.model, "int8", False)
    assert isinstance(built.model.decoder_layers[0].fc1, torch.nn.Linear)


@pytest.mark.parametrize("flags", [(), ("--latent-tied-codes",)])
def test_int8_quantizes_the_linear_maps_and_translates_nearly_alike(
    build_vqvae, make_sample, flags
):
    built = _trained(build_vqvae, *flags)
    fp32 = copy.deepcopy(built.model)
    task = built.task
    expected = _translate(
        task, fp32, task.build_generator([fp32], built.args), "test", 8
    )
    built.args.gen_int8 = True
    model = built.model
    generator = task.build_generator([model], built.args)
    assert model.int8
    for layer in [
        *model.encoder.layers,
        *model.decoder_layers,
        *model.latent_predictor.layers,
    ]:
        assert isinstance(layer.fc1, dynamic.Linear) and isinstance(
            layer.fc2, dynamic.Linear
        )
        assert isinstance(
            layer.self_attn.q_proj, torch.nn.Linear
        )  # read directly: fp32
    assert isinstance(model.latent_predictor.output, dynamic.Linear)
    assert isinstance(model.output_projection.linear, dynamic.Linear)
    assert type(model.length_head).__name__ == "LengthClassifier"  # fp32
    task.build_generator([model], built.args)  # a second build quantizes nothing again
    for batch in (1, 8):  # every sentence once, at any batch size
        got = _translate(task, model, generator, "test", batch)
        assert sorted(got) == sorted(expected)
    # The same codes decode to nearly the same tokens: int8 rounding moves the logits a
    # little (and flips a near tie now and then).
    sample = make_sample(task, "test", range(8))
    agree = []
    for m in (fp32, model):
        with torch.no_grad():
            net = sample["net_input"]
            encoder_out = m.encoder(net["src_tokens"], src_lengths=net["src_lengths"])
            _, padding, _, vq = m.autoencode(
                sample["target"], net["src_lengths"], encoder_out
            )
            agree.append(m.decode(m.bottleneck.lookup(vq.codes), padding, encoder_out))
    tokens = sample["target"].ne(model.pad)
    tokens = torch.nn.functional.pad(tokens, (0, agree[0].shape[1] - tokens.shape[1]))
    same = (agree[0].argmax(-1) == agree[1].argmax(-1))[tokens].float().mean()
    assert same >= 0.9, float(same)
    relative = (agree[0] - agree[1]).norm() / agree[0].norm()
    assert relative < 0.1, float(relative)
    with pytest.raises(OptionError, match="quantized for inference"):
        model.train()
