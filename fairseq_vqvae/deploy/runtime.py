"""Translate with a vqvae_nat student exported by ``scripts/export_onnx.py``, on ONNX Runtime
and numpy alone (no torch, no fairseq): ``OnnxTranslator(model_dir).translate(ids)``.

The export copies this file into the model folder as ``runtime.py``, so a deployment is that
folder plus ``pip install numpy onnxruntime``::

    python MODEL_DIR/runtime.py MODEL_DIR < source.bpe > output.bpe

Decoding is the generator's default path (``fairseq_vqvae/generator.py``): the encoder and the
length classifier, greedy latent codes one step at a time (``latent_step.onnx`` with its
self-attention cache), then every token in one pass (``decoder.onnx``) for the sentences of
each latent count, and where each sentence ends (``--gen-eos``, ``hypotheses.sentence_ends``).
"""

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

logger = logging.getLogger(__name__)

__all__ = ["OnnxTranslator", "Vocabulary", "FORMAT", "CONFIG"]

FORMAT = 1  # of translator.json; a runtime refuses any other
CONFIG = "translator.json"
EOS_POLICIES = (
    "first",
    "last-latent",
    "length",
)  # --gen-eos (fairseq_vqvae/hypotheses.py)


def _with_overrides(config: dict, overrides: dict) -> dict:
    """``config`` with the runtime options ``OnnxTranslator`` was given, checked."""
    names = {"eos": "eos_policy"}
    unknown = set(overrides) - {"eos", "dedup", "max_len_a", "max_len_b"}
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}")
    config = dict(config)
    for key, value in overrides.items():
        if value is not None or key == "max_len_b":  # max_len_b None: no cap
            config[names.get(key, key)] = value
    if config["eos_policy"] not in EOS_POLICIES:
        raise ValueError(f"eos must be one of {', '.join(EOS_POLICIES)}")
    if config["eos_policy"] == "length" and not config["length_head"]:
        raise ValueError(
            "eos 'length' needs a model trained with --latent-length predict; use "
            "last-latent or first"
        )
    return config


class Vocabulary:
    """A fairseq dictionary file (``symbol count`` per line) after its special symbols."""

    def __init__(self, path, side: dict):
        self.symbols = list(side["specials"])
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            symbol, count = line.rstrip().rsplit(" ", 1)
            if count == "#fairseq:overwrite":
                symbol = symbol.rsplit(" ", 1)[0]
            self.symbols.append(symbol)
        self.ids = {symbol: i for i, symbol in enumerate(self.symbols)}
        self.unk = side["unk"]

    def encode(self, line: str) -> list:
        """Ids of a whitespace-tokenized line (unknown symbols -> unk), without EOS."""
        return [self.ids.get(symbol, self.unk) for symbol in line.split()]

    def decode(self, ids) -> str:
        return " ".join(self.symbols[i] for i in ids)


class OnnxTranslator:
    """The three exported graphs in ONNX Runtime sessions.

    Args:
        model_dir: an export's folder (``translator.json``, the graphs, the dictionaries).
        threads: ONNX Runtime's intra-op threads.
        eos, dedup, max_len_a, max_len_b: override the export's ``--gen-eos``,
            ``--gen-dedup`` and ``--max-len-a/b`` (``max_len_b`` None: no cap).
    """

    def __init__(self, model_dir, threads: int = 1, **overrides):
        self.model_dir = Path(model_dir)
        config = json.loads((self.model_dir / CONFIG).read_text(encoding="utf-8"))
        if config.get("format") != FORMAT:
            raise ValueError(
                f"{self.model_dir} was exported in format {config.get('format')}, this "
                f"runtime reads format {FORMAT}: export it again"
            )
        self.config = config = _with_overrides(config, overrides)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sessions = {
            name: ort.InferenceSession(
                str(self.model_dir / file), options, providers=["CPUExecutionProvider"]
            )
            for name, file in config["graphs"].items()
        }
        self.inputs = {
            name: {i.name for i in session.get_inputs()}
            for name, session in self.sessions.items()
        }
        layers = config["cache"]["layers"]
        self.step_inputs = [  # the latent step's cache and memory inputs, in order
            f"{kind}_{part}_{i}"
            for kind in ("past", "memory")
            for i in range(layers)
            for part in ("keys", "values")
        ]
        self.source = Vocabulary(
            self.model_dir / config["source"]["dictionary"], config["source"]
        )
        self.target = Vocabulary(
            self.model_dir / config["target"]["dictionary"], config["target"]
        )

    def translate(self, sources) -> list:
        """Target token ids (without EOS) of source token ids (without EOS), one batch."""
        if not sources:
            return []
        tokens = self._batch(sources)
        padding = tokens == self.config["source"]["pad"]
        enc, lengths, counts, *memory = self._run("encoder", src_tokens=tokens)
        codes = self._codes(lengths, counts, memory, padding)
        src_lengths = (~padding).sum(1)
        translations = [None] * len(sources)
        last_latent = self.config["eos_policy"] == "last-latent"
        # EOS scores of the last latent's positions for last-latent, else of one (unread;
        # NB: ONNX Runtime's ReduceLogSumExp fails on an empty window).
        window = np.array([self.config["ratio"] if last_latent else 1], dtype=np.int64)
        for count in np.unique(counts):  # no decoder position is padding
            group = np.flatnonzero(counts == count)
            whole = len(group) == len(sources)
            tokens_out, eos_best, eos_scores = self._run(
                "decoder",
                codes=codes[group, :count],
                encoder_out=enc if whole else enc[group],
                padding=padding if whole else padding[group],
                eos_window=window,
            )
            ends = self._ends(eos_best, eos_scores, lengths[group], src_lengths[group])
            for i, row, end in zip(group, tokens_out, ends):
                translations[i] = self._hypothesis(row, int(end))
        return translations

    def translate_lines(self, lines) -> list:
        """Whitespace-tokenized source lines (BPE applied) -> target lines (BPE kept)."""
        ids = self.translate([self.source.encode(line) for line in lines])
        return [self.target.decode(row) for row in ids]

    def _run(self, name, **feeds):
        wanted = self.inputs[name]
        return self.sessions[name].run(
            None, {k: v for k, v in feeds.items() if k in wanted}
        )

    def _batch(self, sources) -> np.ndarray:
        """(B, S) int64: each source and EOS, left-padded (as fairseq's translation task)."""
        side = self.config["source"]
        rows = [list(source) + [side["eos"]] for source in sources]
        longest = max(len(row) for row in rows)
        if longest > self.config["max_source_positions"]:
            raise ValueError(
                f"a source of {longest - 1} tokens is longer than the model's "
                f"{self.config['max_source_positions']} positions (EOS included)"
            )
        tokens = np.full((len(rows), longest), side["pad"], dtype=np.int64)
        for i, row in enumerate(rows):
            tokens[i, longest - len(row) :] = row
        return tokens

    def _codes(self, lengths, counts, memory, padding) -> np.ndarray:
        """(B, N, S) greedy codes; a sentence's codes after its own count are 0.

        Sentences whose codes are complete leave the batch once a quarter of it is done
        (every row's step reads its own row only), so that one long sentence does not keep
        the whole batch stepping."""
        config = self.config
        if bool((lengths > config["max_latents"] * config["ratio"]).any()):
            logger.warning(
                "a sentence needs more latents than the model's %d; its translation is "
                "truncated",
                config["max_latents"],
            )
        cache, slices = config["cache"], config["num_slices"]
        rows = np.arange(len(lengths))  # the sentences still stepping
        shape = (len(rows), cache["heads"], 0, cache["head_dim"])
        past = [np.zeros(shape, np.float32)] * len(memory)  # each layer's keys, values
        previous = np.zeros((len(rows), slices), dtype=np.int64)
        codes = np.zeros((len(rows), int(counts.max()), slices), dtype=np.int64)
        for step in range(codes.shape[1]):
            previous, *past = self._run(
                "latent_step",
                codes=previous,
                step=np.array([step], dtype=np.int64),
                lengths=lengths,
                padding=padding,
                **dict(zip(self.step_inputs, past + memory)),
            )
            previous = np.where((step < counts)[:, None], previous, 0)
            codes[rows, step] = previous
            done = counts <= step + 1
            if 4 * done.sum() >= len(done) and not done.all():
                keep = ~done
                rows, counts, lengths, padding = (
                    a[keep] for a in (rows, counts, lengths, padding)
                )
                previous, past, memory = (
                    previous[keep],
                    [a[keep] for a in past],
                    [a[keep] for a in memory],
                )
        return codes

    def _ends(self, eos_best, eos_scores, lengths, src_lengths) -> np.ndarray:
        """Each sentence's EOS position among its decoded ones (``sentence_ends``), capped
        at max_len_a x |x| + max_len_b, 0 for an empty source."""
        config, decoded = self.config, eos_best.shape[1]
        positions = np.arange(decoded)[None]
        policy = config["eos_policy"]
        if policy == "first":
            ends = np.where(eos_best, positions, decoded).min(1)
        elif policy == "length":
            ends = np.clip(np.minimum(lengths, decoded), 1, None) - 1
        else:  # last-latent: the most likely EOS among the last latent's positions
            ends = decoded - config["ratio"] + eos_scores.argmax(1)
        if config["max_len_b"] is not None:
            cap = np.float32(config["max_len_a"]) * src_lengths.astype(np.float32)
            cap = (cap + np.float32(config["max_len_b"])).astype(np.int64)
            ends = np.minimum(ends, np.clip(cap, 0, None))
        return np.where(src_lengths <= 1, 0, ends)

    def _hypothesis(self, tokens, end: int) -> list:
        tokens = tokens[:end]
        if self.config["dedup"] and end > 1:
            tokens = tokens[np.concatenate([[True], tokens[1:] != tokens[:-1]])]
        return tokens.tolist()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", help="the export's folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32, help="lines per batch")
    args = parser.parse_args(argv)
    translator = OnnxTranslator(args.model_dir, threads=args.threads)
    lines = sys.stdin.read().splitlines()
    for start in range(0, len(lines), args.batch_size):
        for line in translator.translate_lines(lines[start : start + args.batch_size]):
            sys.stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
