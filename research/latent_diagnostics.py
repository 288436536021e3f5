"""What the latent predictor gets right, by latent position, and what it is taught.

  python research/latent_diagnostics.py CHECKPOINT DATA_BIN [--subset valid]
      [--train-sentences 2000] [--max-tokens 4096] [--json OUT]

Loads a vqvae_nat checkpoint with fairseq's API and prints one JSON object (the ablation
harness's diagnostic columns, ``ablate.sh``):

* ``teacher_forced``: on the subset (validation), the share of latents whose predicted (argmax)
  code, given the source and the reference's codes before it, is the reference's code in
  evaluation mode (what ``--gen-oracle-latents`` decodes; the logged ``latent_acc``), overall
  and by position: ``first`` (the first latent of a sentence of several), ``middle`` and
  ``last`` (the last latent, whose window holds EOS and padding; a one-latent sentence's only
  latent is its last).
* ``free_running``: the same shares for the predictor's greedy search from its own codes, as
  the generator decodes, with the reference's latent count and length, so that positions
  align: the accuracy at inference, without the length classifier's errors.
* ``training_targets``: on the first ``--train-sentences`` training pairs, in training mode
  (dropout, soft-EM sampling) as ``fairseq-train`` teaches the predictor: the share of its
  input codes (``inputs_equal_eval``) and the mass of its targets (``target_mass_on_eval``) on
  the evaluation-mode code. 1.0 with ``--latent-clean-targets``.
* ``last_code_entropy_bits``: the plug-in entropy of the last latent's code on the subset, and
  conditioned on T mod 2^n_c (how many tokens its window holds): the information the code
  carries about the sentence's length, which a predictor that is not told the length must
  guess (``--latent-length-condition`` tells it).
* ``codes_in_use``: distinct evaluation-mode codes on the subset (mean over slices).
"""

import argparse
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path

import torch

POSITIONS = ("first", "middle", "last")


def position_classes(padding: torch.Tensor) -> torch.Tensor:
    """(B, N) latent padding (True at padding) -> (B, N) class ids: 0 first, 1 middle, 2 last
    (a one-latent sentence's latent is last), -1 padding."""
    count = (~padding).sum(1, keepdim=True)
    index = torch.arange(padding.shape[1], device=padding.device)[None]
    classes = torch.ones_like(padding, dtype=torch.long)
    classes = torch.where(index == 0, torch.zeros_like(classes), classes)
    classes = torch.where(index == count - 1, torch.full_like(classes, 2), classes)
    return classes.masked_fill(padding, -1)


class Accuracy:
    """Right and total codes (latents x slices) overall and by position class."""

    def __init__(self):
        self.right = torch.zeros(3, dtype=torch.long)
        self.total = torch.zeros(3, dtype=torch.long)

    def add(self, predicted, reference, classes):
        """predicted, reference (B, N, S) codes; classes (B, N) from ``position_classes``."""
        equal = (predicted == reference).long().sum(-1)  # (B, N) right slices
        slices = reference.shape[-1]
        for c in range(3):
            where = classes == c
            self.right[c] += int(equal[where].sum())
            self.total[c] += int(where.sum()) * slices

    def result(self) -> dict:
        total = int(self.total.sum())
        if total == 0:
            raise ValueError("no latents in the subset")
        out = {"all": round(int(self.right.sum()) / total, 4), "codes": total}
        for c, name in enumerate(POSITIONS):
            t = int(self.total[c])
            out[name] = round(int(self.right[c]) / t, 4) if t else None
            out[f"{name}_share"] = round(t / total, 4)
        return out


def entropy_bits(counts: Counter) -> float:
    total = sum(counts.values())
    return -sum(n / total * math.log2(n / total) for n in counts.values() if n)


def conditional_entropy_bits(pairs) -> float:
    """H(code | condition) in bits from (condition, code) pairs (plug-in estimate)."""
    by_condition = defaultdict(Counter)
    for condition, code in pairs:
        by_condition[condition][code] += 1
    total = sum(sum(c.values()) for c in by_condition.values())
    return sum(sum(c.values()) / total * entropy_bits(c) for c in by_condition.values())


def _encode(model, sample):
    net = sample["net_input"]
    return model.encoder(net["src_tokens"], src_lengths=net["src_lengths"])


def _lengths(model, sample):
    return sample["target"].ne(model.pad).sum(1)


@torch.no_grad()
def subset_diagnostics(model, batches) -> dict:
    """Teacher-forced and free-running accuracy by position, last-code entropies, codes in
    use, over evaluation-mode batches."""
    model.eval()
    forced, free = Accuracy(), Accuracy()
    predictor, ratio = model.latent_predictor, model.ratio
    last_pairs, used = [], None
    for sample in batches:
        encoder_out = _encode(model, sample)
        lengths = _lengths(model, sample)
        src_lengths = sample["net_input"]["src_lengths"]
        _, padding, _, vq = model.autoencode(sample["target"], src_lengths, encoder_out)
        codes, classes = vq.codes, position_classes(padding)
        logits = predictor(
            predictor.embed(codes, lengths=lengths), encoder_out, padding
        )
        forced.add(logits.argmax(-1), codes, classes)
        greedy, _ = predictor.search(encoder_out, (~padding).sum(1), lengths=lengths)
        free.add(greedy[:, 0], codes, classes)
        last = (~padding).sum(1) - 1
        last_codes = codes[torch.arange(codes.shape[0]), last, 0]
        last_pairs += list(zip((lengths % ratio).tolist(), last_codes.tolist()))
        real = codes[~padding]  # (M, S)
        hist = torch.nn.functional.one_hot(real, predictor.codebook_size).sum(0)
        used = hist if used is None else used + hist
    return {
        "teacher_forced": forced.result(),
        "free_running": free.result(),
        "last_code_entropy_bits": {
            "unconditioned": round(entropy_bits(Counter(c for _, c in last_pairs)), 3),
            "given_T_mod_ratio": round(conditional_entropy_bits(last_pairs), 3),
        },
        "codes_in_use": round(float((used > 0).float().sum(-1).mean()), 1),
    }


@torch.no_grad()
def training_targets(model, batches, seed: int = 0) -> dict:
    """The predictor's training inputs and targets, in training mode as fairseq-train makes
    them (``VQVAENATModel.predictor_targets``), against the evaluation-mode codes."""
    torch.manual_seed(seed)
    equal = mass = total = 0
    for sample in batches:
        model.eval()
        encoder_out = _encode(model, sample)
        src_lengths = sample["net_input"]["src_lengths"]
        _, padding, _, reference = model.autoencode(
            sample["target"], src_lengths, encoder_out
        )
        model.train()
        encoder_out = _encode(model, sample)
        target, padding, _, vq = model.autoencode(
            sample["target"], src_lengths, encoder_out
        )
        codes, targets = model.predictor_targets(vq, target, padding, encoder_out)
        real = ~padding
        eval_codes = reference.codes[real]  # (M, S)
        equal += int((codes[real] == eval_codes).sum())
        mass += float(targets[real].gather(-1, eval_codes.unsqueeze(-1)).sum())
        total += eval_codes.numel()
    model.eval()
    if total == 0:
        raise ValueError("no latents in the training sentences")
    return {
        "inputs_equal_eval": round(equal / total, 4),
        "target_mass_on_eval": round(mass / total, 4),
        "codes": total,
    }


def _batches(task, subset, max_tokens, sentences=None):
    task.load_dataset(subset)
    dataset = task.dataset(subset)
    indices = None
    if sentences is not None:
        indices = list(range(min(sentences, len(dataset))))
    from fairseq.data import data_utils

    with data_utils.numpy_seed(0):
        itr = task.get_batch_iterator(
            dataset,
            max_tokens=max_tokens,
            ignore_invalid_inputs=True,
        )
    for sample in itr.next_epoch_itr(shuffle=False):
        if indices is not None:
            keep = [
                i for i, sid in enumerate(sample["id"].tolist()) if sid < len(indices)
            ]
            if not keep:
                continue
            if len(keep) < len(sample["id"]):
                sample = _select(sample, keep)
        yield sample


def _select(sample, rows):
    rows = torch.tensor(rows)
    net = sample["net_input"]
    return {
        **sample,
        "id": sample["id"][rows],
        "target": sample["target"][rows],
        "net_input": {
            **net,
            "src_tokens": net["src_tokens"][rows],
            "src_lengths": net["src_lengths"][rows],
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data_bin")
    parser.add_argument("--subset", default="valid")
    parser.add_argument(
        "--train-sentences",
        type=int,
        default=2000,
        help="training pairs for training_targets (the first ones); 0: skip it",
    )
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if args.max_tokens < 1 or args.threads < 1 or args.train_sentences < 0:
        parser.error(
            "--max-tokens and --threads must be at least 1, --train-sentences at least 0"
        )
    if not Path(args.checkpoint).is_file():
        parser.error(f"no checkpoint at {args.checkpoint}")
    torch.set_num_threads(args.threads)
    from fairseq import checkpoint_utils

    import fairseq_vqvae

    fairseq_vqvae.register()
    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [args.checkpoint], arg_overrides={"data": args.data_bin}
    )
    model = models[0].eval()
    result = subset_diagnostics(model, _batches(task, args.subset, args.max_tokens))
    if args.train_sentences:
        result["training_targets"] = training_targets(
            model,
            _batches(task, "train", args.max_tokens, args.train_sentences),
        )
    result["subset"] = args.subset
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
