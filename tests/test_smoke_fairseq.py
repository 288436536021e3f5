"""End to end through fairseq's command lines, on a slice of Multi30k (200/20/20 lines).

``start`` binarizes the data and starts every fairseq command as soon as its inputs
exist (in parallel, from background threads; each costs seconds of start-up). Tests
wait for the command they check. Training runs: the shared 4-update run (with
--eval-bleu), its update-2 checkpoint resumed to 4 updates by a second fairseq-train,
and a 1-update plain ``transformer``.
"""

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import fairseq_vqvae  # noqa: F401  (lets torch.load(weights_only=True) read fairseq checkpoints)

from conftest import CPU_TRAINING, transformer_flags

REPO = Path(__file__).resolve().parents[1]
USER_DIR = REPO / "fairseq_vqvae"
MULTI30K = REPO.parent / "shared" / "data" / "multi30k"
FILES = {
    "train": ("train", 200),
    "valid": ("val", 20),
    "test": ("test_2016_flickr", 20),
}

DATA_AVAILABLE = all(
    (MULTI30K / f"{name}.{lang}.gz").is_file()
    for name, _ in FILES.values()
    for lang in ("en", "de")
)
pytestmark = pytest.mark.skipif(
    not DATA_AVAILABLE,
    reason=f"Multi30k raw text (train/val/test_2016_flickr.*.gz) not in {MULTI30K}",
)

ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "",
}
ENV.pop(
    "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None
)  # the plugin must make checkpoints load itself

VQVAE_TRAIN_FLAGS = (
    "--user-dir",
    str(USER_DIR),
    "--task",
    "translation_vqvae",
    "--arch",
    "vqvae_nat_tiny",
    "--criterion",
    "vqvae_em",
    "--bottleneck",
    "hard_em",
    "--share-all-embeddings",
    *CPU_TRAINING,
    "--seed",
    "1",
    "--save-interval-updates",
    "2",
    "--no-progress-bar",
    "--log-interval",
    "1",
    "--eval-bleu",
    "--eval-bleu-args",
    "{}",
    "--best-checkpoint-metric",
    "bleu",
    "--maximize-best-checkpoint-metric",
)
TRANSFORMER_TRAIN_FLAGS = (
    "--task",
    "translation",
    "--arch",
    "transformer",
    "--criterion",
    "cross_entropy",
    *transformer_flags(dim=32, ffn=32),
    *CPU_TRAINING,
    "--max-update",
    "1",
    "--disable-validation",
    "--no-epoch-checkpoints",
    "--no-progress-bar",
)
CODEBOOK_KEYS = (
    "bottleneck.codebook.weight",
    "bottleneck.codebook.ema_counts",
    "bottleneck.codebook.ema_sums",
    "bottleneck.codebook.num_updates",
)
INTERACTIVE_INPUT = "a man is riding a bike .\n\ntwo dogs play in the snow .\n"
# weights_only loading and the README's hub usage, in a fresh interpreter (nothing
# imported or registered beforehand).
HUB_SCRIPT = """
import sys
import torch
import fairseq_vqvae
checkpoint = sys.argv[1] + "/checkpoint_last.pt"
state = torch.load(checkpoint, map_location="cpu", weights_only=True)
assert "bottleneck.codebook.weight" in state["model"]
from fairseq_vqvae.model import VQVAENATModel
hub = VQVAENATModel.from_pretrained(
    sys.argv[1], checkpoint_file="checkpoint_last.pt", data_name_or_path=sys.argv[2],
    user_dir=sys.argv[3],
)
single = hub.translate("a man is riding a bike .")
pair = hub.translate(["a man is riding a bike .", "two dogs play in the snow ."])
assert isinstance(single, str) and isinstance(pair[1], str), (single, pair)
assert pair[0] == single, (single, pair)
print("TRANSLATION:" + single)
# Keyword options of translate() reach the generator (as fairseq's iter_decode_* options do),
# also for a checkpoint saved before the task had them; those of from_pretrained set the task's.
for key in ("gen_dedup", "gen_eos"):
    del state["cfg"]["task"][key]
torch.save(state, sys.argv[1] + "/old_options.pt")
old = VQVAENATModel.from_pretrained(
    sys.argv[1], checkpoint_file="old_options.pt", data_name_or_path=sys.argv[2],
    user_dir=sys.argv[3],
)
import copy
from omegaconf import open_dict
options = copy.deepcopy(old.cfg.generation)
with open_dict(options):
    options.gen_dedup, options.gen_eos = True, "length"
generator = old.task.build_generator(old.models, options)
assert generator.dedup is True and generator.eos_policy == "length", vars(generator)
assert isinstance(old.translate("a man is riding a bike .", gen_dedup=True, gen_eos="length"), str)
saved = VQVAENATModel.from_pretrained(
    sys.argv[1], checkpoint_file="checkpoint_last.pt", data_name_or_path=sys.argv[2],
    user_dir=sys.argv[3], gen_dedup=True,
)
generator = saved.task.build_generator(saved.models, saved.cfg.generation)
assert generator.dedup is True, vars(generator)
"""


def fairseq(command, *args, cwd, stdin=None, timeout=300):
    """Run ``fairseq-<command>`` (the console script next to this python)."""
    script = Path(sys.executable).parent / f"fairseq-{command}"
    argv = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-m", f"fairseq_cli.{command}"]
    )
    result = subprocess.run(
        [*argv, *map(str, args)],
        cwd=cwd,
        env=ENV,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    result.output = result.stdout + result.stderr  # fairseq's CLIs log to stdout
    result.log = (
        f"$ fairseq-{command} {' '.join(map(str, args))}\n"
        f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}"
    )
    return result


def _tokenize(line):
    return " ".join(re.findall(r"\w+|[^\w\s]", line.lower()))


def start(root):
    """Write and binarize the slice, then start each command once its inputs exist.

    Returns at once; ``jobs`` maps names to futures of CompletedProcess (added as they
    start). conftest.py calls this right after collection, so that the commands overlap
    the in-process tests.
    """
    pool = ThreadPoolExecutor(max_workers=8)
    databin = root / "bin"
    dirs = SimpleNamespace(
        root=root,
        databin=databin,
        full=root / "ckpt_full",
        half=root / "ckpt_resume",
        transformer=root / "ckpt_transformer",
    )
    jobs = {}

    def generate(checkpoint, *flags):
        return fairseq(
            "generate",
            databin,
            "--user-dir",
            USER_DIR,
            "--task",
            "translation_vqvae",
            "--path",
            checkpoint,
            "--cpu",
            "--num-workers",
            "0",
            "--scoring",
            "sacrebleu",
            *flags,
            cwd=root,
        )

    def resume_from_update_2():
        # What an interrupted run finds in --save-dir: checkpoint_last.pt of update 2.
        dirs.half.mkdir()
        shutil.copy(dirs.full / "checkpoint_1_2.pt", dirs.half / "checkpoint_last.pt")
        return fairseq(
            "train",
            databin,
            *VQVAE_TRAIN_FLAGS,
            "--max-update",
            "4",
            "--save-dir",
            dirs.half,
            cwd=root,
        )

    def fresh_predictor_stage(checkpoint):
        # vqvae_nat_tiny's predictor has 1 layer; the second stage learns a new 2-layer one.
        fresh = root / "predictor_fresh" / "fresh.pt"
        made = subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts/fresh_latent_predictor.py"),
                str(checkpoint),
            ]
            + ["--output", str(fresh), "--latent-layers", "2"],
            cwd=root,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        return fairseq(
            "train",
            databin,
            *VQVAE_TRAIN_FLAGS,
            "--max-update",
            "2",
            "--latent-predictor-only",
            "--latent-layers",
            "2",
            "--finetune-from-model",
            fresh,
            "--save-dir",
            root / "predictor_fresh",
            cwd=root,
        )

    def full_run_then_decode():
        result = fairseq(
            "train",
            databin,
            *VQVAE_TRAIN_FLAGS,
            "--max-update",
            "4",
            "--save-dir",
            dirs.full,
            "--tensorboard-logdir",
            root / "tensorboard",
            cwd=root,
        )
        checkpoint = dirs.full / "checkpoint_last.pt"
        if result.returncode == 0:
            jobs["resume"] = pool.submit(resume_from_update_2)
            jobs["hub"] = pool.submit(
                subprocess.run,
                [
                    sys.executable,
                    "-c",
                    HUB_SCRIPT,
                    str(dirs.full),
                    str(databin),
                    str(USER_DIR),
                ],
                cwd=root,
                env=ENV,
                capture_output=True,
                text=True,
                timeout=300,
            )
            jobs["predictor_only"] = pool.submit(
                fairseq,
                "train",
                databin,
                *VQVAE_TRAIN_FLAGS,
                "--max-update",
                "2",
                "--latent-predictor-only",
                "--finetune-from-model",
                checkpoint,
                "--save-dir",
                root / "predictor_only",
                cwd=root,
            )
            jobs["predictor_fresh"] = pool.submit(fresh_predictor_stage, checkpoint)
            jobs["token_decoder_only"] = pool.submit(
                fairseq,
                "train",
                databin,
                *VQVAE_TRAIN_FLAGS,
                "--max-update",
                "2",
                "--token-decoder-only",
                "--predicted-latent-ratio",
                "0.5",
                "--finetune-from-model",
                checkpoint,
                "--save-dir",
                root / "token_decoder_only",
                cwd=root,
            )
            jobs["generate_bs1"] = pool.submit(
                generate, checkpoint, "--batch-size", "1"
            )
            jobs["generate_bs8"] = pool.submit(
                generate, checkpoint, "--batch-size", "8"
            )
            jobs["generate_oracle"] = pool.submit(
                generate, checkpoint, "--batch-size", "8", "--gen-oracle-latents"
            )
            jobs["generate_eos_dedup"] = pool.submit(
                generate,
                checkpoint,
                "--batch-size",
                "8",
                "--gen-eos",
                "length",
                "--gen-dedup",
            )
            jobs["generate_refused"] = pool.submit(
                generate, checkpoint, "--gen-latent-beam", "100000"
            )
            jobs["interactive"] = pool.submit(
                fairseq,
                "interactive",
                databin,
                "--user-dir",
                USER_DIR,
                "--task",
                "translation_vqvae",
                "--path",
                checkpoint,
                "--source-lang",
                "en",
                "--target-lang",
                "de",
                "--cpu",
                "--buffer-size",
                "3",
                "--batch-size",
                "3",
                cwd=root,
                stdin=INTERACTIVE_INPUT,
            )
        return result

    def transformer_then_generate():
        train = fairseq(
            "train",
            databin,
            *TRANSFORMER_TRAIN_FLAGS,
            "--save-dir",
            dirs.transformer,
            cwd=root,
        )
        if train.returncode != 0:
            return train, None
        return train, generate(
            dirs.transformer / "checkpoint_last.pt", "--batch-size", "1"
        )

    def prepare_then_train():
        for split, (name, count) in FILES.items():
            for lang in ("en", "de"):
                with gzip.open(
                    MULTI30K / f"{name}.{lang}.gz", "rt", encoding="utf-8"
                ) as f:
                    lines = [_tokenize(next(f)) for _ in range(count)]
                (root / f"{split}.{lang}").write_text(
                    "\n".join(lines) + "\n", encoding="utf-8"
                )
        prep = fairseq(
            "preprocess",
            "--source-lang",
            "en",
            "--target-lang",
            "de",
            "--trainpref",
            "train",
            "--validpref",
            "valid",
            "--testpref",
            "test",
            "--destdir",
            databin,
            "--joined-dictionary",
            "--workers",
            "1",
            cwd=root,
        )
        if prep.returncode == 0:
            jobs["train_full"] = pool.submit(full_run_then_decode)
            jobs["transformer"] = pool.submit(transformer_then_generate)
        return prep

    jobs["preprocess"] = pool.submit(prepare_then_train)
    return SimpleNamespace(dirs=dirs, jobs=jobs, pool=pool)


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    started = getattr(request.module, "STARTED", None) or start(
        tmp_path_factory.mktemp("multi30k_smoke")
    )
    try:
        prep = started.jobs["preprocess"].result()
        assert prep.returncode == 0, prep.log
        yield started
    finally:
        started.pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def trained(runs):
    """The 4-update vqvae_nat run's CompletedProcess, after asserting it succeeded."""
    result = runs.jobs["train_full"].result()
    assert result.returncode == 0, result.log
    return result


def _hypotheses(stdout):
    """{sentence id: hypothesis tokens} from fairseq-generate/-interactive H- lines."""
    hypos = {}
    for line in stdout.splitlines():
        if line.startswith("H-"):
            head, _score, *tokens = line.split("\t")
            hypos[int(head[2:])] = tokens[0] if tokens else ""
    return hypos


def test_train_writes_checkpoints_and_logs_validation_bleu(runs, trained):
    assert (runs.dirs.full / "checkpoint_last.pt").is_file()
    assert (runs.dirs.full / "checkpoint_1_2.pt").is_file()  # --save-interval-updates 2
    assert (runs.dirs.full / "checkpoint_best.pt").is_file()
    valid_lines = [
        line
        for line in trained.output.splitlines()
        if "| valid on 'valid' subset" in line
    ]
    assert len(valid_lines) == 2, trained.log  # at updates 2 and 4
    assert all(re.search(r"\| bleu \d+(\.\d+)? \|", line) for line in valid_lines), (
        valid_lines
    )
    assert "num_updates 4" in valid_lines[-1]
    # fairseq's standard loggers work: tensorboardX is installed (no "Please install" line).
    assert "Please install tensorboardX" not in trained.output
    events = list((runs.dirs.root / "tensorboard").rglob("events.out.tfevents.*"))
    assert {p.parent.name for p in events} >= {"train", "valid"}, events


@pytest.mark.parametrize("batch_size", [1, 8])
def test_generate_translates_every_test_sentence(batch_size, runs, trained):
    result = runs.jobs[f"generate_bs{batch_size}"].result()
    assert result.returncode == 0, result.log
    assert "Translated 20 sentences" in result.output, result.log
    assert sorted(_hypotheses(result.stdout)) == list(range(20)), result.log
    assert re.search(r"BLEU = \d", result.stdout), result.log


def test_generate_with_oracle_latents_scores_every_sentence(runs, trained):
    result = runs.jobs["generate_oracle"].result()
    assert result.returncode == 0, result.log
    assert sorted(_hypotheses(result.stdout)) == list(range(20)), result.log
    assert re.search(r"BLEU = \d", result.stdout), result.log


def test_generate_takes_the_eos_rule_and_dedup_flags(runs, trained):
    result = runs.jobs["generate_eos_dedup"].result()
    assert result.returncode == 0, result.log
    hypos = _hypotheses(result.stdout)
    assert sorted(hypos) == list(range(20)), result.log
    for text in hypos.values():
        words = text.split()
        assert all(a != b for a, b in zip(words, words[1:])), text  # --gen-dedup


def test_generate_refuses_a_search_the_checkpoint_cannot_do_in_one_line(runs, trained):
    result = runs.jobs["generate_refused"].result()
    assert result.returncode == 2, result.log
    assert "error: --gen-latent-beam 100000 is more than the" in result.stderr, (
        result.log
    )
    assert "Traceback" not in result.output and not _hypotheses(result.stdout)


def test_generate_output_does_not_depend_on_batch_size(runs, trained):
    outputs = [runs.jobs[f"generate_bs{bs}"].result() for bs in (1, 8)]
    assert all(o.returncode == 0 for o in outputs)
    assert _hypotheses(outputs[0].stdout) == _hypotheses(outputs[1].stdout)


def test_interactive_translates_every_line_and_warns_about_the_empty_one(runs, trained):
    result = runs.jobs["interactive"].result()
    assert result.returncode == 0, result.log
    hypos = _hypotheses(result.stdout)
    assert sorted(hypos) == [0, 1, 2], result.log
    assert hypos[1] == "" and hypos[0] and hypos[2]
    assert re.search(r"WARNING.*1 input sentence\(s\) are empty", result.output), (
        result.log
    )


def test_resumed_training_ends_with_the_same_codebook(runs, trained):
    resumed = runs.jobs["resume"].result()
    assert resumed.returncode == 0, resumed.log
    assert re.search(
        r"Loaded checkpoint \S+checkpoint_last.pt \(epoch 1 @ 2 updates\)",
        resumed.output,
    ), resumed.log
    assert (
        "num_updates=3" in resumed.output and "num_updates=1," not in resumed.output
    ), resumed.log

    straight = torch.load(
        runs.dirs.full / "checkpoint_last.pt", map_location="cpu", weights_only=True
    )
    resumed_state = torch.load(
        runs.dirs.half / "checkpoint_last.pt", map_location="cpu", weights_only=True
    )

    assert int(straight["model"]["bottleneck.codebook.num_updates"]) == 4
    for key in CODEBOOK_KEYS:
        assert torch.equal(straight["model"][key], resumed_state["model"][key]), key
    different = [
        k
        for k, v in straight["model"].items()
        if not torch.equal(v, resumed_state["model"][k])
    ]
    assert (
        not different
    )  # fairseq re-seeds every update, so the whole model is bit-identical


def _stage_changes(runs, job: str) -> set[str]:
    """The state-dict keys a single-part stage (``job``, saved in a directory of that name)
    changed from the checkpoint it started from."""
    result = runs.jobs[job].result()
    assert result.returncode == 0, result.log
    assert "loading pretrained model" in result.output, result.log
    first, second = (
        torch.load(path, map_location="cpu", weights_only=True)["model"]
        for path in (
            runs.dirs.full / "checkpoint_last.pt",
            runs.dirs.root / job / "checkpoint_last.pt",
        )
    )
    return {k for k, v in first.items() if not torch.equal(v, second[k])}


def test_predictor_only_stage_changes_the_predictor_alone(runs, trained):
    """fairseq-train --latent-predictor-only --finetune-from-model: a second stage."""
    changed = _stage_changes(runs, "predictor_only")
    assert changed and all(k.startswith("latent_predictor.") for k in changed), changed


def test_token_decoder_stage_changes_the_decoder_alone(runs, trained):
    """fairseq-train --token-decoder-only --finetune-from-model: the last stage, on the
    predictor's greedy codes for half the latents; the codebook's EMA state stays."""
    changed = _stage_changes(runs, "token_decoder_only")
    parts = ("decompressor.", "decoder_layers.", "decoder_norm.")
    assert changed and all(k.startswith(parts) for k in changed), changed


def test_a_fresh_predictor_of_another_depth_trains_alone(runs, trained):
    """scripts/fresh_latent_predictor.py, then --latent-predictor-only from its checkpoint."""
    result = runs.jobs["predictor_fresh"].result()
    assert result.returncode == 0, result.log
    assert "loading pretrained model" in result.output, result.log
    first, fresh, second = (
        torch.load(path, map_location="cpu", weights_only=True)["model"]
        for path in (
            runs.dirs.full / "checkpoint_last.pt",
            runs.dirs.root / "predictor_fresh" / "fresh.pt",
            runs.dirs.root / "predictor_fresh" / "checkpoint_last.pt",
        )
    )
    assert "latent_predictor.layers.1.fc1.weight" in second
    assert "latent_predictor.layers.1.fc1.weight" not in first
    for key, value in first.items():
        if not key.startswith("latent_predictor."):
            assert torch.equal(second[key], value), key
    trained_keys = {k for k, v in fresh.items() if not torch.equal(v, second[k])}
    assert trained_keys and all(k.startswith("latent_predictor.") for k in trained_keys)


def test_checkpoints_load_with_weights_only_after_importing_the_plugin(runs, trained):
    state = torch.load(
        runs.dirs.full / "checkpoint_last.pt", map_location="cpu", weights_only=True
    )
    assert "bottleneck.codebook.weight" in state["model"]
    assert state["optimizer_history"][-1]["num_updates"] == 4


def test_hub_interface_translates(runs, trained):
    result = runs.jobs["hub"].result()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    translation = re.search(r"^TRANSLATION:(.*)$", result.stdout, re.M)
    assert translation, result.stdout[-3000:]
    # the same checkpoint and sentence through fairseq-interactive
    interactive = runs.jobs["interactive"].result()
    assert interactive.returncode == 0, interactive.log
    expected = _hypotheses(interactive.stdout)[0]
    assert expected and translation.group(1) == expected, (
        translation.group(1),
        expected,
    )


def test_generate_with_a_transformer_checkpoint_fails_clearly(runs):
    train, decode = runs.jobs["transformer"].result()
    assert train.returncode == 0, train.log
    assert decode.returncode != 0, decode.log
    assert (
        "--task translation_vqvae needs a vqvae_nat checkpoint, got a TransformerModel"
        in decode.output
    ), decode.log


@pytest.mark.parametrize("path", ["conv", "latent-steps"])
def test_fast_path_speed_finds_both_forms_translate_alike(runs, trained, path):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "research" / "fast_path_speed.py"),
            str(runs.dirs.full / "checkpoint_last.pt"),
            str(runs.dirs.databin),
            "--path",
            path,
            "--sentences",
            "5",
            "--rounds",
            "1",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "same tokens in all 5 sentences: True" in done.stdout
    old, new = {
        "conv": ("nn.Conv1d", "matrix products"),
        "latent-steps": ("fairseq incremental state", "cached steps"),
    }[path]
    assert f"{new} / {old}:" in done.stdout


def _script(name, *args):
    return subprocess.run(
        [sys.executable, str(REPO / "research" / name), *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


@pytest.mark.parametrize("mode", ["expected:1e-06", "neighbour:1"])
def test_swap_codes_decodes_every_sentence_in_the_geometry_modes(mode, runs, trained):
    done = _script(
        "swap_codes.py",
        mode,
        runs.dirs.databin,
        "--path",
        runs.dirs.full / "checkpoint_last.pt",
        "--user-dir",
        USER_DIR,
        "--task",
        "translation_vqvae",
        "--cpu",
        "--num-workers",
        "0",
        "--scoring",
        "sacrebleu",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(_hypotheses(done.stdout)) == list(range(20)), done.stderr[-2000:]
    report = re.search(rf"swap_codes.py {mode}: (\d+) of (\d+) ", done.stderr)
    assert report, done.stderr[-2000:]
    changed, total = map(int, report.groups())
    assert total > 0
    # neighbour:1 moves every one of the references' codes; at a temperature near 0 the
    # expected code vector is the argmax's own, so no code changes
    assert changed == (total if mode.startswith("neighbour") else 0)


def test_latent_errors_ranks_every_validation_latent(runs, trained):
    done = _script(
        "latent_errors.py", runs.dirs.full / "checkpoint_last.pt", runs.dirs.databin
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["latent_codes"] > 0
    # the argmax is the oracle code exactly as often as fairseq-train's validation logged
    # at the same checkpoint (update 4): the same teacher-forced accuracy
    logged = re.findall(
        r"valid on 'valid' subset \|.*\| latent_acc (\d+(?:\.\d+)?) \|.*num_updates 4\b",
        trained.output,
    )
    assert logged, trained.log
    assert abs(result["argmax_within_neighbours"]["0"] - float(logged[-1])) < 1e-3
    assert result["oracle_in_top"]["1"] == result["argmax_within_neighbours"]["0"]
