"""The hub interface (VQVAENATModel.from_pretrained): batching by the model's positions."""

import torch
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from omegaconf import OmegaConf


def _save(built, path):
    torch.save(
        {  # as fairseq's checkpoint_utils.save_state stores it
            "cfg": OmegaConf.to_container(
                convert_namespace_to_omegaconf(built.args), resolve=True
            ),
            "model": built.model.state_dict(),
            "optimizer_history": [
                {"criterion_name": "VQVAEEMLoss", "best_loss": None, "num_updates": 0}
            ],
            "extra_state": {},
        },
        path,
    )


def test_the_hub_translates_a_sentence_longer_than_the_training_max_tokens(
    build_vqvae, tmp_path
):
    from fairseq_vqvae.model import VQVAENATModel

    built = build_vqvae()  # trained with --max-tokens 1000 (conftest)
    assert built.args.max_tokens == 1000
    _save(built, tmp_path / "checkpoint.pt")
    data = built.args.data
    hub = VQVAENATModel.from_pretrained(str(tmp_path), "checkpoint.pt", data)
    assert hub.cfg.dataset.max_tokens == 1024  # the model's positions
    sentence = " ".join(["a"] * 1010)  # 1,011 tokens with EOS
    assert isinstance(hub.translate(sentence), str)
    mine = VQVAENATModel.from_pretrained(
        str(tmp_path), "checkpoint.pt", data, max_tokens=500
    )
    assert mine.cfg.dataset.max_tokens == 500  # the caller's own choice is kept
