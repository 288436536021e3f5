"""Shared fixtures of the in-process model/criterion tests (tiny, seeded, CPU).

* ``tiny_databin``: about 100 random-letter sentence pairs (20 symbols with the special
  ones), binarized once per session with fairseq-preprocess --joined-dictionary.
* ``build_vqvae``: a tiny ``vqvae_nat`` model, its task and criterion, built through
  fairseq's own parser (``--user-dir``, ``--arch vqvae_nat_tiny`` and extra flags).
"""

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
USER_DIR = REPO / "fairseq_vqvae"

SRC_LETTERS = "abcdefgh"
TGT_LETTERS = "ijklmnop"  # joined dictionary: 4 specials + 16 letters = 20 symbols
SPLITS = {
    "train": 96,
    "valid": 16,
    "test": 13,
}  # 13: not a multiple of 8 (fairseq drops batches)

# Dimensions 8-16, 1-2 layers, codebook 8 (STYLE.md section 6); 4 tokens per latent.
TINY_FLAGS = (
    "--encoder-embed-dim",
    "16",
    "--encoder-ffn-embed-dim",
    "32",
    "--decoder-ffn-embed-dim",
    "32",
    "--encoder-attention-heads",
    "2",
    "--encoder-layers",
    "1",
    "--decoder-layers",
    "2",
    "--latent-layers",
    "2",
    "--codebook-size",
    "8",
    "--compress-steps",
    "2",
    "--dropout",
    "0",
    "--attention-dropout",
    "0",
    "--activation-dropout",
    "0",
)


def transformer_flags(dim: int, ffn: int, layers: int = 1, heads: int = 2) -> tuple:
    """A fairseq Transformer's size flags, encoder and decoder alike (the tests' small ARs/NATs)."""
    flags = []
    for side in ("encoder", "decoder"):
        flags += [f"--{side}-layers", str(layers), f"--{side}-embed-dim", str(dim)]
        flags += [f"--{side}-ffn-embed-dim", str(ffn)]
        flags += [f"--{side}-attention-heads", str(heads)]
    return tuple(flags)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)
    random.seed(0)


def write_letter_pairs(directory: Path, seed: int = 0) -> None:
    """train/valid/test.{src,tgt}: random letters; targets map and reverse sources."""
    rng = random.Random(seed)
    table = str.maketrans(SRC_LETTERS, TGT_LETTERS)
    for split, count in SPLITS.items():
        src_lines, tgt_lines = [], []
        for _ in range(count):
            length = rng.choice([1, 2, 3, 5, 7, 9, 12, 17])
            src = [rng.choice(SRC_LETTERS) for _ in range(length)]
            tgt = [c.translate(table) for c in reversed(src)]
            if rng.random() < 0.3:
                tgt.append(
                    rng.choice(TGT_LETTERS)
                )  # targets a little longer than sources
            src_lines.append(" ".join(src))
            tgt_lines.append(" ".join(tgt))
        (directory / f"{split}.src").write_text("\n".join(src_lines) + "\n")
        (directory / f"{split}.tgt").write_text("\n".join(tgt_lines) + "\n")


def preprocess(raw: Path, destdir: Path, joined: bool = True) -> Path:
    """fairseq-preprocess in process (the CLI's own main, without its start-up cost)."""
    from fairseq import options
    from fairseq_cli import preprocess as fairseq_preprocess

    argv = [
        "--source-lang",
        "src",
        "--target-lang",
        "tgt",
        "--trainpref",
        str(raw / "train"),
        "--validpref",
        str(raw / "valid"),
        "--testpref",
        str(raw / "test"),
        "--destdir",
        str(destdir),
        "--workers",
        "1",
    ]
    if joined:
        argv.append("--joined-dictionary")
    fairseq_preprocess.main(options.get_preprocessing_parser().parse_args(argv))
    return destdir


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("letters_raw")
    write_letter_pairs(raw)
    return raw


@pytest.fixture(scope="session")
def tiny_databin(tiny_raw, tmp_path_factory) -> Path:
    """Binarized letter data with a joined dictionary (20 symbols)."""
    return preprocess(tiny_raw, tmp_path_factory.mktemp("letters_bin"), joined=True)


@pytest.fixture(scope="session")
def tiny_databin_separate(tiny_raw, tmp_path_factory) -> Path:
    """The same data with separate source and target dictionaries."""
    return preprocess(
        tiny_raw, tmp_path_factory.mktemp("letters_bin_sep"), joined=False
    )


# What every tiny training here runs with, in process (build) or through fairseq-train.
CPU_TRAINING = (
    "--optimizer",
    "adam",
    "--lr",
    "1e-3",
    "--max-tokens",
    "1000",
    "--cpu",
    "--num-workers",
    "0",
)


def build(
    databin,
    *flags,
    arch="vqvae_nat_tiny",
    task="translation_vqvae",
    criterion="vqvae_em",
):
    """(args, task, model, criterion) from fairseq's training parser."""
    from fairseq import options, tasks

    # The package registers its fairseq parts only if fairseq was imported first (other
    # tests import the plain-torch fairseq_vqvae.bottleneck before), and fairseq skips
    # --user-dir for an imported package: register all three here.
    import fairseq_vqvae

    fairseq_vqvae.register()

    argv = [
        str(databin),
        "--user-dir",
        str(USER_DIR),
        "--task",
        task,
        "--arch",
        arch,
        "--criterion",
        criterion,
        *CPU_TRAINING,
        *flags,
    ]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    fairseq_task = tasks.setup_task(args)
    model = fairseq_task.build_model(args)
    return SimpleNamespace(
        args=args,
        task=fairseq_task,
        model=model,
        criterion=fairseq_task.build_criterion(args),
    )


@pytest.fixture
def build_vqvae(tiny_databin):
    """``build_vqvae(*flags, databin=None)``: tiny vqvae_nat (TINY_FLAGS + flags)."""

    def _build(*flags, databin=None):
        return build(
            databin or tiny_databin, "--share-all-embeddings", *TINY_FLAGS, *flags
        )

    return _build


def train_a_little(built, steps: int = 30):
    """``built`` after ``steps`` Adam updates of its model on 32 training sentences, in
    evaluation mode: an untrained tiny model's outputs are near ties."""
    model = built.model.train()
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=3e-3
    )
    sample = collate(built.task, "train", range(32))
    for _ in range(steps):
        loss, _, _ = built.criterion(model, sample)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return built


def collate(task, split, indices):
    """A collated sample of sentences ``indices`` of ``split`` (loaded on demand)."""
    if split not in task.datasets:
        task.load_dataset(split)
    dataset = task.dataset(split)
    return dataset.collater([dataset[i] for i in indices])


def ids_by_target_length(task, split="train"):
    """Sentence ids of ``split`` from the shortest target to the longest."""
    if split not in task.datasets:
        task.load_dataset(split)
    sizes = task.dataset(split).tgt_sizes
    return sorted(range(len(sizes)), key=lambda i: (sizes[i], i))


@pytest.fixture
def make_sample():
    """``make_sample(task, split, indices)``: a collated batch of those sentences."""
    return collate


@pytest.fixture
def build_fairseq():
    """``build_fairseq(databin, *flags, arch=, task=, criterion=)``: any model/task."""
    return build


def pytest_collection_finish(session):
    """Start the fairseq commands of test_smoke_fairseq.py when it is selected.

    They take tens of seconds, mostly start-up, and would otherwise leave a core idle
    while the in-process tests run; its ``runs`` fixture picks them up (or starts them
    itself).
    """
    if session.config.option.collectonly:
        return
    for module in {getattr(item, "module", None) for item in session.items} - {None}:
        if not module.__name__.endswith("test_smoke_fairseq"):
            continue
        if module.DATA_AVAILABLE and getattr(module, "STARTED", None) is None:
            module.STARTED = module.start(
                session.config._tmp_path_factory.mktemp("multi30k_smoke")
            )


@pytest.fixture
def tiny_transformer(build_fairseq, tiny_databin):
    """A 1-layer fairseq Transformer (AR) on the tiny data: a non-vqvae model, a tiny teacher."""
    return build_fairseq(
        tiny_databin,
        *transformer_flags(dim=16, ffn=16),
        arch="transformer",
        task="translation",
        criterion="cross_entropy",
    )


def save_checkpoint(built, path) -> None:
    """``built``'s model as a checkpoint fairseq's loaders read (cfg, model, optimizer
    history), as fairseq's checkpoint_utils.save_state stores it."""
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    torch.save(
        {
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


def exported_student(built, root, sentences: int = 13) -> dict:
    """``built`` saved as ``root``/student.pt and exported to ONNX (fp32, ``root``/fp32), with
    the first ``sentences`` test sentences (SPLITS: lengths 1 to 17, so padded): the shared
    set-up of the ONNX tests. Keys: built, checkpoint, sample, sources (token ids without
    pad and EOS), fp32 (the export's directory)."""
    from fairseq_vqvae.deploy.export import export_model

    checkpoint = root / "student.pt"
    save_checkpoint(built, checkpoint)
    sample = collate(built.task, "test", range(sentences))
    return {
        "built": built,
        "checkpoint": checkpoint,
        "sample": sample,
        "sources": source_ids(sample, built.task.target_dictionary),
        "fp32": export_model(built.model, built.task, root / "fp32"),
    }


def source_ids(sample, dictionary) -> list:
    """Each source sentence of ``sample`` as a list of token ids, without pad and EOS."""
    drop = (dictionary.pad(), dictionary.eos())
    return [
        [i for i in row.tolist() if i not in drop]
        for row in sample["net_input"]["src_tokens"]
    ]
