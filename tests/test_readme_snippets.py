"""The README's ```python blocks run as written, on a tiny model.

The hub example is run from the repository root, as the README's commands are (so that
``user_dir="fairseq_vqvae"`` is the package), with its two paths, ``"checkpoints"`` (the
``--save-dir`` of fairseq-train) and ``"data-bin"`` (the binarized data), pointed at a tiny
untrained vqvae_nat saved as fairseq-train saves it and at the tiny letter data.
"""

import contextlib
import io
import re
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def python_blocks(markdown: str) -> list[str]:
    """The code of every ```python fenced block, in order."""
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.M | re.S)


def save_like_fairseq_train(built, path: Path) -> None:
    """A checkpoint as fairseq's checkpoint_utils.save_state stores it."""
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    cfg = convert_namespace_to_omegaconf(built.args)
    torch.save(
        {
            "cfg": OmegaConf.to_container(cfg, resolve=True),
            "model": built.model.state_dict(),
            "optimizer_history": [
                {"criterion_name": "VQVAEEMLoss", "best_loss": None, "num_updates": 0}
            ],
            "extra_state": {},
        },
        path,
    )


PATHS = ('"checkpoints"', '"data-bin"')  # the README's literals, replaced by the test's


@pytest.fixture
def readme_paths(build_vqvae, tiny_databin, tmp_path, monkeypatch):
    """{README literal: the test's path} for a tiny checkpoint and its data."""
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    save_like_fairseq_train(build_vqvae(), checkpoints / "checkpoint_best.pt")
    monkeypatch.chdir(REPO)
    return dict(zip(PATHS, (repr(str(checkpoints)), repr(str(tiny_databin)))))


def test_the_readme_has_a_python_block_and_it_uses_the_hub():
    blocks = python_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```python block"
    assert any("from_pretrained" in block for block in blocks)


def test_every_readme_python_block_runs_on_a_tiny_model(readme_paths):
    blocks = python_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    for number, block in enumerate(blocks, 1):
        if "from_pretrained" in block:
            assert all(literal in block for literal in PATHS), block
        for literal, path in readme_paths.items():
            block = block.replace(literal, path)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"README.md python block {number}", "exec"), {})
        printed = out.getvalue().splitlines()
        # each print(hub.translate(...)) is one line of output (a translation may be empty)
        assert len(printed) == block.count("print("), (number, printed)
