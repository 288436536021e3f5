"""Batch-1 decoding through one of vqvae_nat's hand-written fast paths against the code it replaced.

  python research/fast_path_speed.py CHECKPOINT DATA_BIN [--path conv|latent-steps|compile]
      [--sentences 1000] [--rounds 3] [--threads 1]

Loads a vqvae_nat checkpoint with fairseq's API and translates the first N test sentences at
batch size 1, alternating, in one process, two forms of the same function; prints the median
latency of each per round, their ratio and whether every sentence got the same tokens. One
process and alternating rounds, so that the machine's drift hits both. The paths:

* ``conv``: the residual blocks' convolutions as ``nn.Conv1d`` called on (B, C, T), as before
  2026-12-05, against ``latent.same_conv`` (one matrix product per window; the current code).
* ``latent-steps``: the latent predictor's steps through fairseq's layers and incremental state
  (``latent.FairseqSteps``, as before 2026-12-06) against ``latent.CachedSteps`` (the current code).
* ``compile``: the eager model against ``torch.compile(dynamic=True)`` of the source encoder and
  of the one parallel pass (decompressor and decoder, ``VQVAENATModel.decode``), inductor on the
  CPU, compiled from an empty cache. The warm-up line of each form is its first pass over the
  sentences: for the compiled form, compilation included.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch


def conv1d(conv, x):
    """The convolution as nn.Conv1d on (B, C, T), the code before ``latent.same_conv``."""
    return conv(x.transpose(1, 2)).transpose(1, 2)


def compiled_forms(model) -> dict:
    """The eager encoder and parallel pass against ``torch.compile`` of both (built lazily, once)."""
    eager = (model.encoder.forward, model.decode)
    compiled = []

    def use_compiled():
        if not compiled:
            compiled.extend(torch.compile(f, dynamic=True) for f in eager)
        model.encoder.forward, model.decode = compiled

    def use_eager():
        model.encoder.forward, model.decode = eager

    return {"eager": use_eager, "torch.compile": use_compiled}


def forms_of(path: str, model) -> dict:
    """{name: function that switches the code to that form}, the old form first."""
    from fairseq_vqvae import latent

    if path == "compile":
        return compiled_forms(model)

    if path == "conv":
        # ResidualConv.forward looks same_conv up per call
        same_conv = latent.same_conv
        return {
            "nn.Conv1d": lambda: setattr(latent, "same_conv", conv1d),
            "matrix products": lambda: setattr(latent, "same_conv", same_conv),
        }
    supports = latent.CachedSteps.supports  # LatentPredictor.search asks it per search
    return {
        "fairseq incremental state": lambda: setattr(
            latent.CachedSteps, "supports", staticmethod(lambda predictor: False)
        ),
        "cached steps": lambda: setattr(latent.CachedSteps, "supports", supports),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data_bin")
    parser.add_argument(
        "--path",
        choices=("conv", "latent-steps", "compile"),
        default="conv",
        help="which fast path to compare with the code it replaced (default: conv)",
    )
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.sentences < 1 or args.rounds < 1 or args.threads < 1:
        parser.error("--sentences, --rounds and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    if args.path == "compile" and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        # an empty cache, so that the warm-up times a cold compilation
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    from fairseq import checkpoint_utils

    # Before loading: registers the plugin and lets fairseq checkpoints load (compat)
    import fairseq_vqvae  # noqa: F401

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [args.checkpoint], arg_overrides={"data": args.data_bin}
    )
    for model in models:
        model.eval()
    task.load_dataset("test")
    generator = task.build_generator(models, cfg.generation)
    batches = task.get_batch_iterator(task.dataset("test"), max_sentences=1)
    samples = [
        s for _, s in zip(range(args.sentences), batches.next_epoch_itr(shuffle=False))
    ]
    forms = forms_of(args.path, models[0])

    def translate(form):
        forms[form]()
        times, tokens = [], []
        for sample in samples:
            start = time.perf_counter()
            hypos = task.inference_step(generator, models, sample)
            times.append(time.perf_counter() - start)
            tokens.append(hypos[0][0]["tokens"].tolist())
        return 1e3 * statistics.median(times), tokens

    for form in forms:  # warm-up (for torch.compile: its compilation)
        start = time.perf_counter()
        translate(form)
        print(f"{form}: warm-up pass {time.perf_counter() - start:.1f} s")
    medians = {form: [] for form in forms}
    outputs = {}
    for _ in range(args.rounds):
        for form in forms:
            ms, outputs[form] = translate(form)
            medians[form].append(ms)
    old, new = (statistics.median(medians[f]) for f in forms)
    for form in forms:
        print(
            f"{form}: "
            + " / ".join(f"{ms:.2f}" for ms in medians[form])
            + " ms (median per round)"
        )
    before, after = forms
    same = outputs[before] == outputs[after]
    print(
        f"{after} / {before}: {new / old:.3f} ({new:.2f} against {old:.2f} ms); "
        f"same tokens in all {len(samples)} sentences: {same}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    sys.exit(main())
