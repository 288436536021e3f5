"""The ONNX runtime's search over latents (``OnnxTranslator(latent_beam=, length_beam=,
rescore=, teacher=)``), on numpy alone: the length classifier's best lengths, a beam over
codes and the ranking of the candidates, as the PyTorch generator computes them
(``fairseq_vqvae/candidates.py``, ``latent_search.search``, ``hypotheses.rank_scores``).

The export copies this file into the model folder beside ``runtime.py``, which imports it
(and ``runtime_options.py``: the options, the teacher).
"""

from typing import NamedTuple

import numpy as np

__all__ = ["Candidates", "candidates", "ranked", "greedy_codes", "beam_codes"]


class Candidates(NamedTuple):
    """Every sentence's candidates, grouped by sentence (``fairseq_vqvae.candidates``)."""

    sentence: np.ndarray  # (C,) the source sentence of each
    codes: np.ndarray  # (C, N, S) int64, 0 after a candidate's latent count
    counts: np.ndarray  # (C,) latents
    lengths: np.ndarray  # (C,) target lengths T (EOS included)
    prior: np.ndarray  # (C,) float32 log p(T | x) + log p(z | x, T)

    def take(self, index) -> "Candidates":
        return Candidates(*(a[index] for a in self))


def candidates(translator, lengths, length_logp, src_lengths, memory, padding):
    """Every sentence's length_beam x latent_beam candidates (``Candidates``), length-major,
    as ``fairseq_vqvae.candidates.predicted_candidates``, from ``OnnxTranslator.translate``'s
    encoder outputs (``memory``: the latent predictor's keys and values)."""
    config = translator.config
    per, beam = config["length_beam"], config["latent_beam"]
    lengths, length_prior = length_candidates(config, lengths, length_logp, src_lengths)
    lengths = lengths.reshape(-1)  # (B * L,)
    translator.warn_truncation(lengths)
    ratio = config["ratio"]
    counts = np.clip((lengths + ratio - 1) // ratio, 1, config["max_latents"])
    rows = np.repeat(np.arange(len(src_lengths)), per)
    if per > 1:
        padding, memory = padding[rows], [m[rows] for m in memory]
    if beam == 1:
        codes, prior = greedy_codes(translator, lengths, counts, memory, padding)
        codes, prior = codes[:, None], prior[:, None]
    else:
        step = stepper(translator, lengths, padding, memory)
        codes, prior = beam_codes(step, counts, beam)
    prior = (prior + length_prior.reshape(-1, 1)).reshape(-1)
    return Candidates(
        np.repeat(rows, beam),
        codes.reshape(-1, *codes.shape[2:]),
        np.repeat(counts, beam),
        np.repeat(lengths, beam),
        prior,
    )


def ranked(translator, cand, sources, enc, padding, src_lengths) -> list:
    """The best candidate's tokens of every sentence (``--gen-rescore``)."""
    rescore = translator.config["rescore"]
    if rescore == "latent":  # ranked before decoding: decode the best only
        best = best_candidates(cand.sentence, cand.prior, len(sources))
        return translator.decode_candidates(
            cand.take(best), enc, padding, src_lengths, False
        )[0]
    scored = rescore == "model"
    tokens, totals, counts = translator.decode_candidates(
        cand, enc, padding, src_lengths, scored
    )
    teacher = None
    if rescore == "teacher":
        source, target = translator.source.symbols, translator.target.symbols
        teacher = teacher_scores(
            translator.teacher,
            [[source[i] for i in sources[s]] for s in cand.sentence],
            [[target[i] for i in t] for t in tokens],
        )
    scores = rank(rescore, cand.prior, totals, counts, teacher)
    best = best_candidates(cand.sentence, scores, len(sources))
    return [tokens[i] for i in best]


def stepper(translator, lengths, padding, memory):
    """``beam_codes``' step over rows of ``lengths`` (R,), ``padding`` and
    ``memory`` (their rows taken again only when the rows change)."""
    cache, feeds = translator.config["cache"], {}

    def step(previous, t, rows, past):
        if feeds.get("rows") is not rows:
            feeds.update(rows=rows, lengths=lengths[rows], padding=padding[rows])
            feeds["memory"] = [m[rows] for m in memory]
        if past is None:
            shape = (len(rows), cache["heads"], 0, cache["head_dim"])
            past = [np.zeros(shape, np.float32)] * len(memory)
        _, logp, top, *past = translator.latent_step(
            previous, t, feeds["lengths"], feeds["padding"], past, feeds["memory"]
        )
        return logp, top, past

    return step


def length_candidates(config, lengths, length_logp, src_lengths) -> tuple:
    """(target lengths T (B, L) int64, their log-probabilities (B, L) float32), as
    ``VQVAENATModel.length_candidates``: the encoder's best with 0 for one length, else the
    length classifier's ``length_beam`` most likely, best first."""
    beam = config["length_beam"]
    if beam == 1:
        return lengths[:, None], np.zeros((len(lengths), 1), np.float32)
    classes = np.argsort(-length_logp, axis=1, kind="stable")[:, :beam]
    prior = np.take_along_axis(length_logp, classes, 1)
    offset = config["length_offset"]
    return np.maximum(src_lengths[:, None] + classes - offset, 1), prior


def greedy_codes(translator, lengths, counts, memory, padding) -> tuple:
    """(greedy codes (B, N, S), a sentence's codes after its own count 0; their
    log-probabilities (B,) float32, summed over slices), as ``latent_search.search`` with
    beam_size 1, from the rows of the encoder's outputs (``memory``: the latent predictor's
    keys and values).

    Sentences whose codes are complete leave the batch once a quarter of it is done
    (every row's step reads its own row only), so that one long sentence does not keep
    the whole batch stepping."""
    cache, slices = translator.config["cache"], translator.config["num_slices"]
    rows = np.arange(len(lengths))  # the sentences still stepping
    shape = (len(rows), cache["heads"], 0, cache["head_dim"])
    past = [np.zeros(shape, np.float32)] * len(memory)  # each layer's keys, values
    previous = np.zeros((len(rows), slices), dtype=np.int64)
    codes = np.zeros((len(rows), int(counts.max()), slices), dtype=np.int64)
    scores = np.zeros(len(rows), np.float32)
    for step in range(codes.shape[1]):
        previous, logp, _, *past = translator.latent_step(
            previous, step, lengths, padding, past, memory
        )
        active = step < counts
        previous = np.where(active[:, None], previous, 0)
        codes[rows, step] = previous
        scores[rows] += np.where(active, logp[:, :, 0].sum(-1), np.float32(0))
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
    return codes, scores


def beam_codes(step, counts, beam: int) -> tuple:
    """``beam`` code sequences per row by beam search over one slice, as
    ``latent_search.search`` (beam_size=beam): the beams start from the first step's best
    codes; each later step keeps the best ``beam`` of beam x its k best continuations; a row
    stops at its latent count (its codes after it are 0, its beams keep their order).

    Args:
        step: (previous codes (R', 1) int64, the step, rows (R',) into the R rows, past
            (None at step 0)) -> (the k best codes' log-probabilities (R', 1, k), those
            codes (R', 1, k), the new past, rows in the order given).
        counts: (R,) latents per row.

    Returns:
        codes (R, beam, N, 1) int64 and their log-probabilities (R, beam) float32, best first.
    """
    total = len(counts)
    codes = np.zeros((total, beam, int(counts.max()), 1), np.int64)
    alive = np.arange(total)
    logp, top, past = step(np.zeros((total, 1), np.int64), 0, alive, None)
    # The beams start identical: the first step extends one row per sentence.
    scores = logp[:, 0, :beam].copy()
    codes[:, :, 0, 0] = top[:, 0, :beam]
    rows = np.repeat(alive, beam)
    past = [p.repeat(beam, axis=0) for p in past]
    for t in range(1, codes.shape[2]):
        keep = counts[alive] > t
        if not keep.all():  # finished rows leave: their beams only append code 0
            alive, rows = alive[keep], np.repeat(alive[keep], beam)
            past = [p[np.repeat(keep, beam)] for p in past]
        previous = codes[alive, :, t - 1].reshape(-1, 1)
        logp, top, past = step(previous, t, rows, past)
        width = len(alive)
        # (A, beam x beam): every beam's score plus its best continuations
        extended = scores[alive][:, :, None] + logp[:, 0, :beam].reshape(
            width, beam, -1
        )
        extended = extended.reshape(width, -1)
        pick = np.argsort(-extended, axis=1, kind="stable")[:, :beam]
        parents = pick // beam
        scores[alive] = np.take_along_axis(extended, pick, 1)
        history = np.take_along_axis(codes[alive], parents[:, :, None, None], 1)
        history[:, :, t, 0] = np.take_along_axis(
            top[:, 0, :beam].reshape(width, -1), pick, 1
        )
        codes[alive] = history
        order = (np.arange(width)[:, None] * beam + parents).reshape(-1)
        past = [p[order] for p in past]
    return codes, scores


def rank(rescore, prior, totals, counts, teacher_scores) -> np.ndarray:
    """(C,) each candidate's ``rescore`` score (higher is better), as
    ``hypotheses.rank_scores``: ``latent`` its log-prior (C,), ``model`` (log-prior + the
    sum of its positional scores ``totals``) / its tokens ``counts`` (EOS included),
    ``teacher`` the teacher's ``teacher_scores``."""
    if rescore == "latent":
        return prior
    if rescore == "model":
        return (prior + totals) / counts.astype(np.float32)
    return teacher_scores


def best_candidates(sentence, scores, sentences: int) -> np.ndarray:
    """(B,) each sentence's best candidate: the first of the highest ``scores`` (C,) among
    its candidates (``sentence`` (C,)), as the generator's stable sort keeps them."""
    order = np.lexsort((np.arange(len(scores)), -scores.astype(np.float64), sentence))
    first = np.ones(len(order), bool)
    first[1:] = sentence[order][1:] != sentence[order][:-1]
    best = order[first]
    if len(best) != sentences:
        raise ValueError("a sentence has no candidate")
    return best


def teacher_scores(teacher, sources, candidates) -> np.ndarray:
    """(C,) ``teacher(sources, candidates)`` (symbol lists, EOS left out) of each distinct
    (source, candidate) pair, one call for all: beams often decode to the same tokens."""
    pairs = {}
    for source, candidate in zip(sources, candidates):
        pairs.setdefault((tuple(source), tuple(candidate)), len(pairs))
    distinct = list(pairs)
    scores = np.asarray(
        teacher([list(s) for s, _ in distinct], [list(c) for _, c in distinct]),
        np.float32,
    )
    if scores.shape != (len(distinct),):
        raise ValueError(
            f"the teacher gave {scores.shape} scores for {len(distinct)} translations"
        )
    return scores[[pairs[(tuple(s), tuple(c))] for s, c in zip(sources, candidates)]]
