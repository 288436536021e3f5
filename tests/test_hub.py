"""The hub interface (VQVAENATModel.from_pretrained): batching by the model's positions."""

from conftest import save_checkpoint


def test_the_hub_translates_a_sentence_longer_than_the_training_max_tokens(
    build_vqvae, tmp_path
):
    from fairseq_vqvae.model import VQVAENATModel

    built = build_vqvae()  # trained with --max-tokens 1000 (conftest)
    assert built.args.max_tokens == 1000
    save_checkpoint(built, tmp_path / "checkpoint.pt")
    data = built.args.data
    hub = VQVAENATModel.from_pretrained(str(tmp_path), "checkpoint.pt", data)
    assert hub.cfg.dataset.max_tokens == 1024  # the model's positions
    sentence = " ".join(["a"] * 1010)  # 1,011 tokens with EOS
    assert isinstance(hub.translate(sentence), str)
    mine = VQVAENATModel.from_pretrained(
        str(tmp_path), "checkpoint.pt", data, max_tokens=500
    )
    assert mine.cfg.dataset.max_tokens == 500  # the caller's own choice is kept
