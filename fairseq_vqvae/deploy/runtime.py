"""Translate with a vqvae_nat student exported by ``scripts/export_onnx.py``, on ONNX Runtime
and numpy alone (no torch, no fairseq): ``OnnxTranslator(model_dir).translate(ids)``.

The export copies this file into the model folder as ``runtime.py``, so a deployment is that
folder plus ``pip install numpy onnxruntime``::

    python MODEL_DIR/runtime.py MODEL_DIR < source.bpe > output.bpe

Decoding is the generator's (``fairseq_vqvae/generator.py``): the encoder and the length
classifier, latent codes one step at a time (``latent_step.onnx`` with its self-attention
cache), then every token in one pass (``decoder.onnx``) for the candidates of each latent
count, and where each sentence ends (``--gen-eos``, ``hypotheses.sentence_ends``). By default
one length and greedy codes; ``latent_beam``, ``length_beam`` and ``rescore`` (with a
``teacher``) search and rank as ``--gen-latent-beam``, ``--gen-length-beam`` and
``--gen-rescore`` do (``runtime_search.py``, copied beside this file).
"""

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

if __package__:  # fairseq_vqvae.deploy
    from . import runtime_options
    from . import runtime_search as search
else:  # the model folder's copies
    import runtime_options
    import runtime_search as search

logger = logging.getLogger(__name__)

__all__ = ["OnnxTranslator", "Vocabulary", "FORMAT", "CONFIG"]

FORMAT = 2  # of translator.json; a runtime refuses any other (2: the search's outputs)
CONFIG = "translator.json"


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
        teacher: for ``rescore="teacher"``: a ``ctranslate2.Translator`` of the AR teacher, or
            a callable (source symbol lists, candidate symbol lists, EOS left out) -> each
            candidate's mean token log-probability, EOS included.
        eos, dedup, max_len_a, max_len_b: override the export's ``--gen-eos``,
            ``--gen-dedup`` and ``--max-len-a/b`` (``max_len_b`` None: no cap).
        latent_beam, length_beam, rescore: override the export's ``--gen-latent-beam``,
            ``--gen-length-beam`` (>= 1; 1 and 1: greedy codes, one length) and
            ``--gen-rescore`` (latent, model or teacher).
    """

    def __init__(self, model_dir, threads: int = 1, teacher=None, **overrides):
        self.model_dir = Path(model_dir)
        config = json.loads((self.model_dir / CONFIG).read_text(encoding="utf-8"))
        if config.get("format") != FORMAT:
            raise ValueError(
                f"{self.model_dir} was exported in format {config.get('format')}, this "
                f"runtime reads format {FORMAT}: export it again"
            )
        self.config = config = runtime_options.with_overrides(config, overrides)
        runtime_options.check_search(config, teacher)
        self.teacher = runtime_options.teacher_function(teacher)
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
        enc, lengths, counts, length_logp, *memory = self._run(
            "encoder", src_tokens=tokens
        )
        src_lengths = (~padding).sum(1)
        config = self.config
        if config["latent_beam"] == config["length_beam"] == 1:  # one candidate each
            self.warn_truncation(lengths)
            codes, prior = search.greedy_codes(self, lengths, counts, memory, padding)
            cand = search.Candidates(
                np.arange(len(sources)), codes, counts, lengths, prior
            )
            return self.decode_candidates(cand, enc, padding, src_lengths, False)[0]
        cand = search.candidates(
            self, lengths, length_logp, src_lengths, memory, padding
        )
        return search.ranked(self, cand, sources, enc, padding, src_lengths)

    def decode_candidates(self, cand, enc, padding, src_lengths, scored: bool) -> tuple:
        """(every candidate's tokens (lists), and where ``scored`` the sums (C,) float32 and
        counts (C,) of its positional scores, EOS included, as ``hypotheses.hypothesis``)."""
        config, ratio, size = self.config, self.config["ratio"], len(cand.sentence)
        translations, totals = [None] * size, np.zeros(size, np.float32)
        counts = np.ones(size, np.int64)
        last_latent = config["eos_policy"] == "last-latent"
        # EOS scores of the last latent's positions for last-latent, of all for the model
        # ranking, else of one (unread; NB: ReduceLogSumExp fails on an empty window).
        window = ratio if last_latent else 1
        in_order = size == len(enc) and bool((cand.sentence == np.arange(size)).all())
        for count in np.unique(cand.counts):  # no decoder position is padding
            group = np.flatnonzero(cand.counts == count)
            whole, rows = in_order and len(group) == size, cand.sentence[group]
            decoded = int(count) * ratio
            tokens_out, eos_best, eos_scores, token_scores = self._run(
                "decoder",
                codes=cand.codes[group, :count],
                encoder_out=enc if whole else enc[rows],
                padding=padding if whole else padding[rows],
                eos_window=np.array([decoded if scored else window], dtype=np.int64),
            )
            ends = self._ends(
                eos_best, eos_scores, cand.lengths[group], src_lengths[rows]
            )
            for j, (i, end) in enumerate(zip(group, ends.tolist())):
                kept = self._kept(tokens_out[j], end)
                translations[i] = tokens_out[j, kept].tolist()
                if scored:
                    eos = eos_scores[j, end : end + 1] if end < decoded else [0.0]
                    positional = np.concatenate([token_scores[j, kept], eos])
                    totals[i], counts[i] = (
                        positional.sum(dtype=np.float32),
                        len(positional),
                    )
        return translations, totals, counts

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

    def warn_truncation(self, lengths) -> None:
        config = self.config
        if bool((lengths > config["max_latents"] * config["ratio"]).any()):
            logger.warning(
                "a sentence needs more latents than the model's %d; its translation is "
                "truncated",
                config["max_latents"],
            )

    def latent_step(self, previous, step, lengths, padding, past, memory) -> list:
        """``latent_step.onnx``: (greedy codes, the k best codes' log-probabilities, those
        codes, then the new past)."""
        return self._run(
            "latent_step",
            codes=previous,
            step=np.array([step], dtype=np.int64),
            lengths=lengths,
            padding=padding,
            **dict(zip(self.step_inputs, past + memory)),
        )

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
            ratio = config["ratio"]
            ends = decoded - ratio + eos_scores[:, -ratio:].argmax(1)
        if config["max_len_b"] is not None:
            cap = np.float32(config["max_len_a"]) * src_lengths.astype(np.float32)
            cap = (cap + np.float32(config["max_len_b"])).astype(np.int64)
            ends = np.minimum(ends, np.clip(cap, 0, None))
        return np.where(src_lengths <= 1, 0, ends)

    def _kept(self, tokens, end: int) -> np.ndarray:
        """The positions of ``tokens`` (L,) a hypothesis keeps: those before ``end``, without
        a token equal to the one before it under ``dedup``."""
        kept = np.arange(end)
        if self.config["dedup"] and end > 1:
            kept = kept[np.concatenate([[True], tokens[1:end] != tokens[: end - 1]])]
        return kept


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", help="the export's folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32, help="lines per batch")
    runtime_options.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        translator = OnnxTranslator(
            args.model_dir,
            threads=args.threads,
            teacher=runtime_options.teacher_of_arguments(args),
            **{k: getattr(args, k) for k in runtime_options.SEARCH_OPTIONS},
        )
    except ValueError as error:
        parser.error(str(error))
    lines = sys.stdin.read().splitlines()
    for start in range(0, len(lines), args.batch_size):
        for line in translator.translate_lines(lines[start : start + args.batch_size]):
            sys.stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
