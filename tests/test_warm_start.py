"""--init-from-ar: warm start of vqvae_nat from a fairseq transformer checkpoint."""

import pytest
import torch

from conftest import TINY_FLAGS, transformer_flags

# The teacher has the tiny student's dimensions (TINY_FLAGS): d=16, FFN 32, 2 heads, 1 encoder
# layer; one decoder layer against the student's two (the first is copied).
TEACHER_FLAGS = ("--share-all-embeddings", *transformer_flags(dim=16, ffn=32))


def _teacher(build_fairseq, databin, path, *flags):
    built = build_fairseq(databin, *TEACHER_FLAGS, *flags, arch="transformer", task="translation",
                          criterion="cross_entropy")  # fmt: skip
    with torch.no_grad():
        for param in built.model.parameters():
            param.normal_()  # far from any fresh initialization
    torch.save({"model": built.model.state_dict()}, path)
    return built.model.state_dict()


@pytest.fixture
def teacher(build_fairseq, tiny_databin, tmp_path):
    path = tmp_path / "teacher.pt"
    return path, _teacher(build_fairseq, tiny_databin, path)


def test_copies_encoder_embeddings_and_decoder_layers(build_vqvae, teacher):
    path, theirs = teacher
    torch.manual_seed(0)
    model = build_vqvae("--post-norm", "--init-from-ar", str(path)).model
    ours = model.state_dict()
    copied = [
        k for k in theirs if k.startswith("encoder.") and not k.endswith(".version")
    ]
    assert (
        "encoder.embed_tokens.weight" in copied
        and "encoder.layers.0.fc1.weight" in copied
    )
    for key in copied:
        assert torch.equal(ours[key], theirs[key]), key
    assert torch.equal(
        ours["embed_target.weight"], theirs["decoder.embed_tokens.weight"]
    )
    for name in (
        "self_attn.q_proj.weight",
        "encoder_attn.out_proj.bias",
        "fc2.weight",
        "final_layer_norm.bias",
    ):
        assert torch.equal(
            ours[f"decoder_layers.0.{name}"], theirs[f"decoder.layers.0.{name}"]
        ), name
    # The teacher has one decoder layer: the second keeps its initialization, as do the parts
    # the teacher has no counterpart for.
    torch.manual_seed(0)
    fresh = build_vqvae("--post-norm").model.state_dict()
    for key in (
        "decoder_layers.1.fc1.weight",
        "latent_predictor.output.weight",
        "compressor.downsample.0.weight",
        "length_head.weight",
    ):
        assert torch.equal(ours[key], fresh[key]), key
    assert not torch.equal(
        ours["encoder.layers.0.fc1.weight"], fresh["encoder.layers.0.fc1.weight"]
    )


def test_warm_started_model_trains_and_generates(build_vqvae, teacher, make_sample):
    built = build_vqvae("--post-norm", "--init-from-ar", str(teacher[0]))
    sample = make_sample(built.task, "train", range(4))
    loss, _, _ = built.criterion(built.model, sample)
    loss.backward()
    assert torch.isfinite(loss)
    hypos = built.task.build_generator([built.model.eval()], built.args).generate(
        [built.model], sample
    )
    assert len(hypos) == 4


def test_pre_norm_student_is_refused_with_the_fix(build_vqvae, teacher):
    with pytest.raises(
        ValueError, match=r"post-norm layers, this model pre-norm ones; add --post-norm"
    ):
        build_vqvae("--init-from-ar", str(teacher[0]))


def test_pre_norm_teacher_needs_a_pre_norm_student(
    build_vqvae, build_fairseq, tiny_databin, tmp_path
):
    path = tmp_path / "pre.pt"
    _teacher(
        build_fairseq,
        tiny_databin,
        path,
        "--encoder-normalize-before",
        "--decoder-normalize-before",
    )
    with pytest.raises(ValueError, match="drop --post-norm"):
        build_vqvae("--post-norm", "--init-from-ar", str(path))
    model = build_vqvae(
        "--init-from-ar", str(path)
    ).model  # pre-norm both: the final norms too
    theirs = torch.load(path)["model"]
    assert torch.equal(model.decoder_norm.weight, theirs["decoder.layer_norm.weight"])
    assert torch.equal(
        model.state_dict()["encoder.layer_norm.bias"], theirs["encoder.layer_norm.bias"]
    )


def test_other_dimensions_are_refused(
    build_vqvae, build_fairseq, tiny_databin, tmp_path
):
    path = tmp_path / "wide.pt"
    _teacher(build_fairseq, tiny_databin, path, "--encoder-ffn-embed-dim", "64")
    with pytest.raises(
        ValueError,
        match=r"encoder.layers.0.fc1.weight has shape \(64, 16\).*FFN dimensions",
    ):
        build_vqvae("--post-norm", "--init-from-ar", str(path))


def test_other_dictionary_is_refused(
    build_vqvae, build_fairseq, tiny_databin, tmp_path
):
    path = tmp_path / "dict.pt"
    state = _teacher(build_fairseq, tiny_databin, path)
    for key in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        state[key] = torch.cat([state[key], state[key][:1]])
    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match="teacher's dictionary"):
        build_vqvae("--post-norm", "--init-from-ar", str(path))


def test_learned_positions_are_refused(
    build_vqvae, build_fairseq, tiny_databin, tmp_path
):
    path = tmp_path / "learned.pt"
    _teacher(build_fairseq, tiny_databin, path, "--encoder-learned-pos")
    with pytest.raises(
        ValueError, match="encoder.embed_positions.weight.*--encoder-learned-pos"
    ):
        build_vqvae("--post-norm", "--init-from-ar", str(path))


def test_not_a_transformer_checkpoint_or_no_file(build_vqvae, tmp_path):
    path = tmp_path / "student.pt"
    torch.save({"model": build_vqvae().model.state_dict()}, path)
    with pytest.raises(
        ValueError, match="needs a fairseq autoregressive transformer checkpoint"
    ):
        build_vqvae("--post-norm", "--init-from-ar", str(path))
    with pytest.raises(ValueError, match="no checkpoint file"):
        build_vqvae("--post-norm", "--init-from-ar", str(tmp_path / "missing.pt"))


def test_loading_a_checkpoint_skips_the_warm_start(build_vqvae, teacher):
    """Generation and the hub build models with from_checkpoint=True: the teacher may be gone."""
    built = build_vqvae("--post-norm", "--init-from-ar", str(teacher[0]))
    teacher[0].unlink()
    model = built.task.build_model(built.args, from_checkpoint=True)
    model.load_state_dict(built.model.state_dict())


def test_legacy_normalize_before_checkpoints_keep_pre_norm(build_vqvae):
    args = build_vqvae().args
    assert args.post_norm is False and not any(
        "normalize" in flag for flag in TINY_FLAGS
    )
    from fairseq_vqvae.model import vqvae_nat_tiny

    legacy = type(args)(
        **{k: v for k, v in vars(args).items() if k != "post_norm"},
        normalize_before=False,
    )
    vqvae_nat_tiny(legacy)
    assert legacy.post_norm is True
