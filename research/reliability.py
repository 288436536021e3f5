#!/usr/bin/env python
"""The reliability benchmark (issue 16): fault cases against a tiny model, one table.

Each case does what a careless user or a crash would do, through fairseq's own command-line
tools (and the project's scripts), and compares what happens with what must happen:

* kills at any moment, including the instant after fairseq saved a checkpoint and is copying
  it to ``checkpoint_last.pt`` (a real SIGKILL loop), then resumes: every checkpoint file stays
  loadable and the run ends where an unkilled run ends, with a finite codebook;
* damaged or mismatched inputs (a NaN codebook, a same-size dictionary with other symbols, a
  split binarized with another dictionary, an empty or misaligned split, another
  ``--bottleneck`` on resume): a one-line error that says what to do, exit status 2, nothing
  overwritten;
* out-of-range options and CPU precision flags: a one-line error naming the flag;
* divergence (``--lr 10``): a codebook warning in the training log;
* the benchmark script: a misspelt option is refused, and a results file is never replaced by
  one with fewer measurements.

    python research/reliability.py [--fast] [--kills N] [--jobs N] [--case NAME ...] [--md F] [--json F]

``--fast`` runs the cases CI runs (about a minute and a half on 2 cores: everything but
divergence and five of the bad options, with ``--kills 3``). Exit status 1 when a case's observed outcome is not the expected one. The
table it prints is the project's regression record for reliability (README, "Reliability").
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER_DIR = ROOT / "fairseq_vqvae"
BIN = Path(sys.executable).parent
TINY = (
    "--arch vqvae_nat_tiny --encoder-embed-dim 32 --encoder-ffn-embed-dim 64 "
    "--decoder-ffn-embed-dim 64 --encoder-layers 1 --decoder-layers 1 --latent-layers 1 "
    "--codebook-size 16 --compress-steps 2 --share-all-embeddings --criterion vqvae_em "
    "--optimizer adam --lr 1e-3 --max-tokens 1000 --cpu --num-workers 0 --seed 1 "
    "--log-format simple --log-interval 10 --no-progress-bar --no-epoch-checkpoints"
).split()
CASES = {}
ENVIRONMENT = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def case(expected, fast=True):
    """Register ``function(env) -> (ok, observed, lost)`` as a case."""

    def register(function):
        CASES[function.__name__] = (expected, fast, function)
        return function

    return register


class Env:
    def __init__(self, work: Path, kills: int):
        self.work, self.kills = work, kills
        self.data = work / "data-bin"
        self.base = (
            work / "base"
        )  # a trained tiny model's save dir (copied, never changed)

    def train_command(self, save, *flags, data=None):
        command = [BIN / "fairseq-train", data or self.data, "--user-dir", USER_DIR]
        command += ["--task", "translation_vqvae", *TINY, "--save-dir", save, *flags]
        return list(map(str, command))

    def tool(self, name, *args, timeout=300):
        """Run fairseq-NAME (or a python script path) and capture its output."""
        command = (
            [sys.executable, str(name)]
            if str(name).endswith(".py")
            else [str(BIN / f"fairseq-{name}")]
        )
        return subprocess.run(
            [*command, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.work,
            env=ENVIRONMENT,
        )

    def train(self, save, *flags, data=None, timeout=300):
        return subprocess.run(
            self.train_command(save, *flags, data=data),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.work,
            env=ENVIRONMENT,
        )

    def generate(self, checkpoint, data=None):
        return self.tool(
            "generate",
            data or self.data,
            "--user-dir",
            USER_DIR,
            "--task",
            "translation_vqvae",
            "--path",
            checkpoint,
            "--gen-subset",
            "test",
            "--batch-size",
            "8",
            "--cpu",
        )

    def copy_data(self, name) -> Path:
        target = self.work / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.data, target)
        return target


def setup(env: Env) -> None:
    raw = env.work / "raw"
    for folder in (raw, env.data, env.base):  # a reused --work starts afresh
        shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(
        [sys.executable, ROOT / "scripts/make_synthetic_corpus.py", "--out-dir", raw]
        + "--train 300 --valid 24 --test 24".split(),
        check=True,
        capture_output=True,
    )
    result = env.tool(
        "preprocess",
        *"--source-lang en --target-lang de --joined-dictionary --workers 1".split(),
        *("--trainpref", raw / "train", "--validpref", raw / "valid"),
        *("--testpref", raw / "test", "--destdir", env.data),
    )
    _check(result, "fairseq-preprocess")
    _check(env.train(env.base, "--max-update", "20"), "training the base model")


def _check(result, what):
    if result.returncode != 0:
        sys.exit(f"reliability: error: {what} failed:\n{result.stderr[-3000:]}")


def _clear_failure(result, *needles):
    """(ok, observed) for "fails without a traceback, the last line holding every needle"."""
    lines = (result.stderr or "").strip().splitlines()
    last = lines[-1] if lines else "(nothing on stderr)"
    ok = (
        result.returncode != 0
        and "Traceback" not in result.stderr
        and all(needle in last for needle in needles)
    )
    if "Traceback" in result.stderr:
        last = "traceback: " + last
    return ok, f"exit {result.returncode}: {last[:160]}"


def one_line_error(result, *needles):
    """(ok, observed) for "a one-line error containing every needle, status 2, no traceback"."""
    ok, observed = _clear_failure(result, ": error: ", *needles)
    return ok and result.returncode == 2, observed


def _load(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def _codebook_finite(state) -> bool:
    import torch

    return all(
        torch.isfinite(value).all()
        for key, value in state["model"].items()
        if key.startswith("bottleneck.codebook.")
    )


def _largest_difference(state, other) -> float:
    """The largest absolute difference between two checkpoints' model tensors."""
    if state["model"].keys() != other["model"].keys():
        return float("inf")
    return max(
        (
            float((value.double() - other["model"][key].double()).abs().max())
            for key, value in state["model"].items()
            if value.numel()
        ),
        default=0.0,
    )


# ---- cases ----------------------------------------------------------------------------------
@case(
    "every checkpoint file loads after every kill; the resumed run ends at the same update "
    "as an unkilled one, with its weights and codebook (to 1e-6), codebook finite"
)
def kill_loop(env):
    save = env.work / "killed"
    shutil.rmtree(save, ignore_errors=True)
    flags = ["--max-update", "100", "--save-interval-updates", "4"]
    flags += ["--keep-interval-updates", "1", "--disable-validation"]
    command = env.train_command(save, *flags)
    rng = random.Random(1)
    broken, after_save = [], 0
    for kill in range(env.kills):
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=env.work,
            env=ENVIRONMENT,
        )
        saves = rng.randint(1, 3)  # kill 0-50 ms after the n-th "Finished saving"
        for line in process.stdout:
            if "Finished saving checkpoint" in line:
                saves -= 1
                if saves == 0:
                    time.sleep(rng.uniform(0, 0.05))
                    after_save += 1
                    break
        process.send_signal(signal.SIGKILL)
        process.wait()
        for path in sorted(save.glob("*.pt")):
            try:
                _load(path)
            except Exception as error:  # what a truncated copy raises
                broken.append(f"{path.name} after kill {kill + 1}: {error}"[:120])
    result = env.train(save, *flags)
    if result.returncode != 0:
        return (
            False,
            f"resume failed: {result.stderr.strip().splitlines()[-1:]}",
            "the run",
        )
    straight = env.work / "unkilled"
    shutil.rmtree(straight, ignore_errors=True)
    _check(env.train(straight, *flags), "the unkilled run")
    state = _load(save / "checkpoint_last.pt")
    updates = state["optimizer_history"][-1]["num_updates"]
    finite = _codebook_finite(state)
    gap = _largest_difference(state, _load(straight / "checkpoint_last.pt"))
    ok = not broken and updates == 100 and finite and gap <= 1e-6
    observed = (
        f"{env.kills} kills ({after_save} 0-50 ms after a save); {len(broken)} unloadable "
        f"checkpoint files; resumed run ended at update {updates}; codebook "
        f"{'finite' if finite else 'NOT finite'}; largest difference from the unkilled "
        f"run's weights and codebook {gap:.1e}"
    )
    return ok, observed, "; ".join(broken) or "nothing"


@case("one-line error naming the non-finite codebook; no output")
def nan_codebook(env):
    import torch

    state = _load(env.base / "checkpoint_last.pt")
    state["model"]["bottleneck.codebook.weight"].fill_(float("nan"))
    path = env.work / "nan.pt"
    torch.save(state, path)
    result = env.generate(path)
    ok, observed = one_line_error(result, "codebook is not finite")
    return ok and "H-0" not in result.stdout, observed, "nothing"


@case("one-line error: the data's dictionary is not the checkpoint's")
def same_size_other_dictionary(env):
    data = env.copy_data("data_swapped")
    for side in ("en", "de"):
        lines = (data / f"dict.{side}.txt").read_text().splitlines()
        lines[0], lines[1] = lines[1], lines[0]  # same size, two symbols swapped
        (data / f"dict.{side}.txt").write_text("\n".join(lines) + "\n")
    result = env.generate(env.base / "checkpoint_last.pt", data=data)
    return (*one_line_error(result, "dictionary mismatch"), "nothing")


@case("one-line error: the split was binarized with another dictionary")
def split_from_another_dictionary(env):
    import logging

    import torch
    from fairseq.data import Dictionary, data_utils, indexed_dataset

    logging.getLogger("fairseq").setLevel(logging.WARNING)

    data = env.copy_data("data_other_ids")
    size = len(Dictionary.load(str(data / "dict.de.txt")))
    prefix = str(data / "test.en-de.de")
    sentences = [
        torch.tensor([size + 3, 2])
        for _ in data_utils.load_indexed_dataset(prefix, None)
    ]
    builder = indexed_dataset.make_builder(
        prefix + ".bin", impl="mmap", vocab_size=size + 10
    )
    for sentence in sentences:
        builder.add_item(sentence)
    builder.finalize(prefix + ".idx")
    result = env.generate(env.base / "checkpoint_last.pt", data=data)
    return (
        *one_line_error(
            result, "binarized with another dictionary", "fairseq-preprocess"
        ),
        "nothing",
    )


@case("one-line error naming both bottlenecks; the checkpoint is not overwritten")
def resume_with_another_bottleneck(env):
    save = env.work / "other_bottleneck"
    shutil.rmtree(save, ignore_errors=True)
    shutil.copytree(env.base, save)
    before = (save / "checkpoint_last.pt").read_bytes()
    result = env.train(save, "--max-update", "30", "--bottleneck", "hard_em")
    ok, observed = one_line_error(result, "--bottleneck soft_em", "hard_em")
    same = (save / "checkpoint_last.pt").read_bytes() == before
    return (
        ok and same,
        observed,
        "nothing" if same else "checkpoint_last.pt overwritten",
    )


def _generate(env, *flags, checkpoint=None):
    return env.tool(
        "generate",
        env.data,
        *("--user-dir", USER_DIR, "--task", "translation_vqvae", "--cpu"),
        *("--path", checkpoint or env.base / "checkpoint_last.pt"),
        *flags,
    )


def _interactive(env, text: bytes, name: str):
    path = env.work / f"{name}.txt"  # one file per case: cases run side by side
    path.write_bytes(text)
    return env.tool(
        "interactive",
        env.data,
        *("--user-dir", USER_DIR, "--task", "translation_vqvae", "--cpu"),
        *("--path", env.base / "checkpoint_last.pt", "--input", path),
        *("--source-lang", "en", "--target-lang", "de"),
    )


def _truncated_checkpoint(env):
    path = env.work / "truncated.pt"
    path.write_bytes((env.base / "checkpoint_last.pt").read_bytes()[:3000])
    return _generate(env, "--gen-subset", "test", checkpoint=path)


def _another_architecture(env):
    save = env.work / "other_architecture"
    shutil.rmtree(save, ignore_errors=True)
    shutil.copytree(env.base, save)
    before = (save / "checkpoint_last.pt").read_bytes()
    result = env.train(save, "--max-update", "30", "--encoder-layers", "2")
    if (save / "checkpoint_last.pt").read_bytes() != before:
        result.stderr += "\n(checkpoint_last.pt overwritten)"
    return result


FAIRSEQ_FAILURES = {  # name: (what it does, the needle of its one-line error)
    "unreadable_checkpoint": (
        _truncated_checkpoint,
        "is not a readable fairseq checkpoint",
    ),
    "missing_gen_subset": (
        lambda env: _generate(env, "--gen-subset", "train2"),
        "has no split 'train2' (it has: test, train, valid)",
    ),
    "misspelt_model_overrides": (
        lambda env: _generate(
            env, "--gen-subset", "test", "--model-overrides", "{'gen_latnet_beam': 4}"
        ),
        "did you mean 'gen_latent_beam'",
    ),
    "max_tokens_below_longest": (
        lambda env: _generate(env, "--gen-subset", "test", "--max-tokens", "3"),
        "--max-tokens 3 is below the longest sentence",
    ),
    "input_longer_than_positions": (
        lambda env: _interactive(env, b" ".join([b"a"] * 1100) + b"\n", "long_input"),
        "--skip-invalid-size-inputs-valid-test",
    ),
    "input_not_utf8": (
        lambda env: _interactive(env, b"hello \xff\xfe world\n", "latin_input"),
        "is not UTF-8",
    ),
    "save_dir_not_creatable": (
        lambda env: env.train(
            env.base / "checkpoint_last.pt" / "sub", "--max-update", "1"
        ),
        "cannot be created",
    ),
    "length_filters_drop_everything": (
        lambda env: env.train(
            env.work / "save_filtered",
            *("--max-update", "1", "--max-source-positions", "4"),
            *("--max-target-positions", "4"),
        ),
        "dropped every sentence pair",
    ),
    "resume_with_another_architecture": (
        _another_architecture,
        "holds another model than these flags build",
    ),
}


def _fairseq_failure_case(name, action, needle):
    def run(env):
        result = action(env)
        lost = "checkpoint_last.pt overwritten" in result.stderr
        ok, observed = one_line_error(result, needle)
        return ok and not lost, observed, "checkpoint_last.pt" if lost else "nothing"

    run.__name__ = name
    case(f"one-line error: {needle}")(run)


for _name, (_action, _needle) in FAIRSEQ_FAILURES.items():
    _fairseq_failure_case(_name, _action, _needle)


def _empty_split(data):
    for side in ("en", "de"):
        (data / f"valid.en-de.{side}.bin").write_bytes(b"")


def _misaligned_split(data):
    for ext in ("bin", "idx"):
        shutil.copy(data / f"test.en-de.de.{ext}", data / f"valid.en-de.de.{ext}")
        shutil.copy(data / f"train.en-de.en.{ext}", data / f"valid.en-de.en.{ext}")


def _data_fault_case(name, damage, needle, expected):
    def run(env):
        data = env.copy_data(f"data_{name}")
        damage(data)
        result = env.train(env.work / f"save_{name}", "--max-update", "1", data=data)
        return (*one_line_error(result, needle), "nothing")

    run.__name__ = name
    case(expected)(run)


_data_fault_case(
    "empty_split",
    _empty_split,
    "the valid set is empty",
    "one-line error naming the empty split",
)
_data_fault_case(
    "misaligned_split",
    _misaligned_split,
    "different numbers of sentences",
    "one-line error: the split's two sides differ in length",
)


BAD_OPTIONS = {
    "dropout_one": (["--dropout", "1.0"], "--dropout must be in [0.0, 1.0)"),
    "zero_slices": (["--num-slices", "0"], "--num-slices"),
    "negative_code_dim": (["--code-dim", "-8"], "--code-dim"),
    "source_length_ratio_zero": (
        ["--latent-length", "source", "--length-ratio", "0"],
        "--length-ratio",
    ),
    "fp16_on_cpu": (["--fp16"], "--bf16-autocast"),
    "bf16_on_cpu": (["--bf16"], "--bf16-autocast"),
    "no_plugin_task": (["--task", "translation"], "--task translation_vqvae"),
    "other_criterion": (["--criterion", "cross_entropy"], "--criterion vqvae_em"),
}


# CI runs one bad option of each kind (a plugin range, a fairseq flag, a component): the others
# take the same path, and tests/test_model.py checks their messages in process.
BAD_OPTIONS_IN_CI = ("dropout_one", "fp16_on_cpu", "other_criterion")


def _bad_option_case(name, flags, needle):
    def run(env):
        result = env.train(env.work / f"save_{name}", "--max-update", "1", *flags)
        return (*one_line_error(result, needle), "nothing")

    run.__name__ = name
    case(
        f"one-line error naming {needle.split()[0]} (flags: {' '.join(flags)})",
        fast=name in BAD_OPTIONS_IN_CI,
    )(run)


for _name, (_flags, _needle) in BAD_OPTIONS.items():
    _bad_option_case(_name, _flags, _needle)


@case("one-line error: --max-updates must be >= 1")
def image_negative_updates(env):
    result = subprocess.run(
        [sys.executable, "-m", "fairseq_vqvae.image.train", "--data", env.work]
        + ["--save-dir", env.work / "image_run", "--max-updates", "-1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    return (*_clear_failure(result, "--max-updates", "must be >= 1"), "nothing")


@case("the WMT14 and CIFAR-10 recipes say which data is missing")
def recipes_without_data(env):
    environment = dict(os.environ, WORK=str(env.work / "wmt"), CUDA_VISIBLE_DEVICES="")
    wmt = subprocess.run(
        ["bash", ROOT / "examples/wmt14_en_de/run.sh", "--stages", "vqvae"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    cifar = subprocess.run(
        ["bash", ROOT / "examples/cifar10/run.sh", env.work / "nowhere"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    ok_wmt, seen_wmt = _clear_failure(wmt, "no training data at", "--stages prepare")
    ok_cifar, seen_cifar = _clear_failure(cifar, "no CIFAR-10 folder")
    return ok_wmt and ok_cifar, f"{seen_wmt}; {seen_cifar}", "nothing"


@case(
    "a codebook warning in the log within 110 updates, or a one-line error: diverged, "
    "lower --lr",
    fast=False,
)
def divergence(env):
    save = env.work / "diverged"
    shutil.rmtree(save, ignore_errors=True)
    result = env.train(
        save, "--max-update", "110", "--lr", "10", "--disable-validation"
    )
    warnings = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "codebook: " in line
    ]
    diverged = one_line_error(result, "training diverged", "--lr")
    observed = f"exit {result.returncode}; " + (
        warnings[0].split("codebook: ", 1)[1][:120] if warnings else diverged[1]
    )
    return bool(warnings) or diverged[0], observed, "nothing"


@case("the misspelt option is refused before anything is measured")
def benchmark_misspelt_option(env):
    spec = f"student=translation_vqvae:{env.base / 'checkpoint_last.pt'}:gen_eoss=first"
    out = ["--json", env.work / "misspelt.json"]
    result = env.tool(
        ROOT / "scripts/benchmark.py", "--data", env.data, "--model", spec, *out
    )
    last = (result.stderr.strip().splitlines() or ["(nothing)"])[-1]
    ok = (
        result.returncode != 0
        and "gen_eoss" in last
        and "Traceback" not in result.stderr
    )
    return ok, f"exit {result.returncode}: {last[:160]}", "nothing"


@case("the results file keeps its measurements when a rerun finds no checkpoint")
def benchmark_keeps_measurements(env):
    table = env.work / "bench" / "benchmark.json"
    table.parent.mkdir(exist_ok=True)
    common = ["--data", env.data, "--threads", "1", "--throughput-max-tokens", "0"]
    spec = f"student=translation_vqvae:{env.base / 'checkpoint_last.pt'}"
    result = env.tool(
        ROOT / "scripts/benchmark.py", *common, "--model", spec, "--json", table
    )
    _check(result, "the first benchmark")
    before = table.read_text()
    gone = f"student=translation_vqvae:{env.work / 'gone.pt'}"
    result = env.tool(
        ROOT / "scripts/benchmark.py",
        *common,
        *("--model", gone, "--merge-json", table, "--json", table),
    )
    kept = table.read_text() == before
    observed = (
        f"exit {result.returncode}; results file {'unchanged' if kept else 'REWRITTEN'}"
    )
    return (
        kept and result.returncode != 0,
        observed,
        "nothing" if kept else "measurements",
    )


# ---- report ---------------------------------------------------------------------------------
def run_case(name, env):
    expected, _, function = CASES[name]
    start = time.perf_counter()
    try:
        ok, observed, lost = function(env)
    except (
        Exception
    ) as error:  # a case that crashes is a failed case, not a crashed run
        ok, observed, lost = False, f"{type(error).__name__}: {error}"[:200], "?"
    seconds = time.perf_counter() - start
    print(
        f"{'ok  ' if ok else 'FAIL'} {name} ({seconds:.0f} s): {observed}", flush=True
    )
    return dict(
        case=name,
        expected=expected,
        observed=observed,
        lost=lost,
        ok=ok,
        seconds=round(seconds, 1),
    )


def run(names, env, jobs):
    """The cases, ``jobs`` at a time (each is a few CLI processes in its own folder)."""
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda name: run_case(name, env), names))


def markdown(rows) -> str:
    lines = ["| case | expected | observed | lost | ok |", "|---|---|---|---|---|"]
    for row in rows:
        cells = [row["case"], row["expected"], row["observed"], row["lost"]]
        cells = [cell.replace("|", "\\|") for cell in cells]
        lines.append(
            "| " + " | ".join(cells) + f" | {'yes' if row['ok'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fast", action="store_true", help="only the cases CI runs")
    parser.add_argument(
        "--kills",
        type=int,
        default=None,
        help="SIGKILLs in kill_loop (default 10; 3 with --fast)",
    )
    parser.add_argument(
        "--case",
        action="append",
        choices=sorted(CASES),
        help="run only this case (repeatable)",
    )
    parser.add_argument(
        "--work", type=Path, help="scratch folder (default: a temporary one)"
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="cases run at once (default 2)"
    )
    parser.add_argument("--md", type=Path, help="write the table here")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    kills = args.kills if args.kills is not None else (3 if args.fast else 10)
    if kills < 1:
        parser.error(f"--kills must be at least 1, got {kills}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    names = args.case or [
        name for name, (_, fast, _) in CASES.items() if fast or not args.fast
    ]
    with tempfile.TemporaryDirectory(prefix="reliability_") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        env = Env(work.resolve(), kills)
        start = time.perf_counter()
        setup(env)
        rows = run(names, env, args.jobs)
    for row in rows:  # the records name the scratch folder, not this machine's path
        row["observed"] = row["observed"].replace(str(env.work), "WORK")
    table = markdown(rows)
    print("\n" + table)
    print(
        f"{sum(r['ok'] for r in rows)}/{len(rows)} cases as expected, "
        f"{time.perf_counter() - start:.0f} s"
    )
    if args.md:
        args.md.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
