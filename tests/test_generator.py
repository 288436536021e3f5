"""The vqvae_nat generator: one pass from predicted (or oracle) codes, where sentences end,
and the search over latents (length beam, latent beam, sampled codes, rescoring)."""

import math
from collections import Counter

import pytest
import torch
from fairseq import utils

from fairseq_vqvae.errors import OptionError
from fairseq_vqvae.generator import VQVAENATGenerator

from conftest import ids_by_target_length, train_a_little

RATIO = 4  # TINY_FLAGS use --compress-steps 2


def _translate(
    task, model, generator, split, batch_size=None, max_tokens=None, models=None
):
    """{sentence id: hypotheses}, batched as fairseq-generate does (multiple of 8)."""
    if split not in task.datasets:
        task.load_dataset(split)
    itr = task.get_batch_iterator(
        dataset=task.dataset(split),
        max_sentences=batch_size,
        max_tokens=max_tokens,
        max_positions=utils.resolve_max_positions(
            task.max_positions(), model.max_positions()
        ),
        required_batch_size_multiple=8,
        disable_iterator_cache=True,
    ).next_epoch_itr(shuffle=False)
    out = {}
    for sample in itr:
        hypos = task.inference_step(generator, models or [model], sample)
        assert len(hypos) == len(sample["id"])
        out.update(zip(sample["id"].tolist(), hypos, strict=True))
    return out


def test_decoder_runs_once_per_latent_count_and_latent_predictor_once_per_latent(
    build_vqvae, make_sample
):
    built = build_vqvae("--latent-length", "source", "--length-ratio", "2")
    model, task = built.model.eval(), built.task
    generator = task.build_generator([model], built.args)
    calls = Counter()
    for name, layers in (
        ("decoder", model.decoder_layers),
        # one output projection per step, however the step runs its layers (CachedSteps
        # calls their parts, not their forward)
        ("latent", [model.latent_predictor.output]),
    ):
        for i, layer in enumerate(layers):
            layer.register_forward_hook(lambda *_, key=(name, i): calls.update([key]))
    order = ids_by_target_length(task, "test")

    seen_latents = set()
    for ids in ([order[0], order[1]], order[-3:]):
        calls.clear()
        sample = make_sample(task, "test", ids)
        src_lengths = sample["net_input"]["src_lengths"]
        counts = {math.ceil(math.ceil(2 * int(n)) / RATIO) for n in src_lengths}
        expected_latents = max(counts)
        generator.generate([model], sample)
        # one decoder pass per latent count: candidates sharing one share a pass, unpadded
        assert all(
            calls["decoder", i] == len(counts) for i in range(len(model.decoder_layers))
        ), calls
        assert calls["latent", 0] == expected_latents, calls
        seen_latents.add(expected_latents)
    assert (
        len(seen_latents) == 2
    )  # the decoder count did not depend on the output length


def test_generation_returns_one_hypothesis_per_sentence_at_any_batch_size(build_vqvae):
    built = build_vqvae()
    model, task = built.model.eval(), built.task
    generator = task.build_generator([model], built.args)
    dictionary = task.target_dictionary
    results = {
        bs: _translate(task, model, generator, "test", batch_size=bs) for bs in (1, 8)
    }
    results["max_tokens"] = _translate(task, model, generator, "test", max_tokens=40)

    for batching, hypos in results.items():
        assert sorted(hypos) == list(range(13)), f"batching {batching} lost sentences"
        for hypo in hypos.values():
            assert len(hypo) == 1
            tokens = hypo[0]["tokens"]
            assert (
                tokens[-1] == dictionary.eos()
                and not tokens[:-1].eq(dictionary.eos()).any()
            )
            assert not tokens.eq(dictionary.pad()).any()
            assert hypo[0]["positional_scores"].shape == tokens.shape
            assert torch.isfinite(hypo[0]["score"])
    # A translation must not depend on which sentences share its batch.
    for i in range(13):
        for other in (8, "max_tokens"):
            assert torch.equal(
                results[1][i][0]["tokens"], results[other][i][0]["tokens"]
            ), (i, other)


def test_generator_refuses_ensembles(build_vqvae, make_sample):
    built = build_vqvae()
    generator = built.task.build_generator([built.model], built.args)
    with pytest.raises(ValueError, match="ensembles"):
        generator.generate(
            [built.model, built.model], make_sample(built.task, "test", [0])
        )


def test_build_generator_refuses_a_non_vqvae_model(build_vqvae, tiny_transformer):
    built = build_vqvae()
    with pytest.raises(
        ValueError,
        match="--task translation_vqvae needs a vqvae_nat checkpoint, "
        "got a TransformerModel",
    ):
        built.task.build_generator([tiny_transformer.model], built.args)


def test_oracle_latents_decode_the_references_own_codes(
    build_vqvae, make_sample, monkeypatch
):
    """--gen-oracle-latents: the decoder gets lookup(codes of the autoencoded reference), and
    the latent predictor and length classifier are never asked."""
    built = build_vqvae("--bottleneck", "hard_em")
    model = built.model.eval()
    sample = make_sample(built.task, "test", range(4))
    src_lengths = sample["net_input"]["src_lengths"]
    encoder_out = model.encoder(
        sample["net_input"]["src_tokens"], src_lengths=src_lengths
    )
    _, expected_mask, _, vq = model.autoencode(
        sample["target"], src_lengths, encoder_out
    )
    seen = []

    def decode(latents, latent_padding, encoder_out):
        seen.append((latents, latent_padding))
        return original_decode(latents, latent_padding, encoder_out)

    def refuse(*args, **kwargs):
        raise AssertionError("the oracle must not predict codes or lengths")

    original_decode = model.decode
    monkeypatch.setattr(model, "decode", decode)
    monkeypatch.setattr(model.latent_predictor, "search", refuse)
    monkeypatch.setattr(model, "inference_latent_counts", refuse)
    hypos = VQVAENATGenerator(
        built.task.target_dictionary, oracle_latents=True
    ).generate([model], sample)
    assert len(hypos) == 4
    # one unpadded pass per latent count; every reference's own code vectors, once
    counts = (~expected_mask).sum(1)
    assert len(seen) == counts.unique().numel() > 1
    expected = model.bottleneck.lookup(vq.codes)
    expected = [expected[i][~expected_mask[i]] for i in range(4)]
    decoded = [row for latents, mask in seen for row in latents]
    assert all(not mask.any() for _, mask in seen)
    assert len(decoded) == 4
    for row in decoded:
        match = [
            i
            for i, e in enumerate(expected)
            if e.shape == row.shape and torch.allclose(e, row)
        ]
        assert len(match) >= 1
        expected.pop(match[0])


def test_oracle_latents_need_references(build_vqvae, make_sample):
    built = build_vqvae()
    sample = make_sample(built.task, "test", range(2))
    del sample["target"]
    generator = VQVAENATGenerator(built.task.target_dictionary, oracle_latents=True)
    with pytest.raises(ValueError, match="needs a test set with targets"):
        generator.generate([built.model.eval()], sample)


def _eos_lprobs(eos, rows, length, vocab=6):
    """(B, L, V) log-probabilities whose best token is EOS exactly at the given positions,
    and whose EOS log-probability elsewhere is ``rows[i][1][position]`` (default -5)."""
    lprobs = torch.full((len(rows), length, vocab), -5.0)
    lprobs[..., eos + 1] = -0.5  # a word wins wherever EOS does not
    for i, (best_eos, eos_scores) in enumerate(rows):
        for position, score in eos_scores.items():
            lprobs[i, position, eos] = score
        for position in best_eos:
            lprobs[i, position, eos] = -0.1
    return lprobs


@pytest.mark.parametrize(
    "policy, expected",
    [
        (
            "first",
            [1, 8],
        ),  # row 0: EOS wins at 1 and 6; row 1: nowhere -> no EOS (length)
        ("last-latent", [6, 7]),  # best EOS inside positions 4..7 of 2 latents x 4
        ("length", [4, 2]),  # predicted T = 5 and 3 (EOS included)
    ],
)
def test_sentence_ends_follow_the_eos_policy(policy, expected):
    from fairseq.data import Dictionary

    dictionary = Dictionary()
    eos = dictionary.eos()
    lprobs = _eos_lprobs(eos, [([1, 6], {}), ([], {3: -1.0, 7: -0.9})], length=8)
    generator = VQVAENATGenerator(dictionary, eos=policy)
    ends = generator.sentence_ends(
        lprobs[..., eos],
        lprobs.argmax(-1).eq(eos),
        torch.tensor([8, 8]),
        ratio=4,
        target_lengths=torch.tensor([5, 3]),
    )
    assert ends.tolist() == expected


@pytest.mark.parametrize("steps", ["2", "0"])  # 4 tokens per code; one code per token
@pytest.mark.parametrize("policy", ["first", "last-latent", "length"])
def test_every_eos_policy_gives_one_final_eos_where_it_says(policy, steps, build_vqvae):
    built = build_vqvae("--gen-eos", policy, "--compress-steps", steps)
    model, task = built.model.eval(), built.task
    ratio = 2 ** int(steps)
    generator = task.build_generator([model], built.args)
    assert generator.eos_policy == policy
    hypos = _translate(task, model, generator, "test", batch_size=4)
    sample_ids = sorted(hypos)
    assert sample_ids == list(range(13))
    eos = task.target_dictionary.eos()
    for i in sample_ids:
        tokens = hypos[i][0]["tokens"]
        assert tokens[-1] == eos and not tokens[:-1].eq(eos).any()
        assert torch.isfinite(hypos[i][0]["score"])
    if policy == "first":
        return
    # Re-derive the predicted lengths: the hypothesis ends where the policy says.
    for i in sample_ids:
        sample = _collate_one(task, i)
        src_lengths = sample["net_input"]["src_lengths"]
        encoder_out = model.encoder(
            sample["net_input"]["src_tokens"], src_lengths=src_lengths
        )
        length = int(model.inference_lengths(encoder_out, src_lengths)[0])
        latents = int(model.inference_latent_counts(encoder_out, src_lengths)[0])
        produced = hypos[i][0]["tokens"].numel()  # tokens + EOS
        if policy == "length":
            assert produced == min(length, latents * ratio)
        else:
            assert (latents - 1) * ratio < produced <= latents * ratio


def _collate_one(task, index):
    dataset = task.dataset("test")
    return dataset.collater([dataset[index]])


def test_eos_policy_length_needs_a_length_head(build_vqvae, make_sample):
    built = build_vqvae("--latent-length", "source", "--gen-eos", "length")
    message = "--gen-eos length needs a model trained with --latent-length predict"
    with pytest.raises(OptionError, match=message):  # when fairseq-generate builds it
        built.task.build_generator([built.model], built.args)
    generator = VQVAENATGenerator(built.task.target_dictionary, eos="length")
    with pytest.raises(OptionError, match=message):
        generator.generate(
            [built.model.eval()], make_sample(built.task, "test", [0, 1])
        )


def test_unknown_eos_policy_is_refused():
    from fairseq.data import Dictionary

    with pytest.raises(
        ValueError, match="--gen-eos must be one of first, last-latent, length"
    ):
        VQVAENATGenerator(Dictionary(), eos="last")


def test_dedup_drops_repeated_tokens_only(build_vqvae, make_sample, monkeypatch):
    """--gen-dedup: the same hypothesis minus every token equal to the one before it."""
    built = build_vqvae()
    model = built.model.eval()
    sample = make_sample(built.task, "test", range(6))
    words = list(
        range(
            built.task.target_dictionary.nspecial,
            built.task.target_dictionary.nspecial + 3,
        )
    )
    original_decode = model.decode

    def stuttering_decode(
        latents, latent_padding, encoder_out
    ):  # words a a b b b c a ...
        logits = original_decode(latents, latent_padding, encoder_out)
        pattern = [words[0], words[0], words[1], words[1], words[1], words[2], words[0]]
        for position in range(logits.shape[1]):
            logits[:, position, pattern[position % len(pattern)]] = 1e4
        return logits

    monkeypatch.setattr(model, "decode", stuttering_decode)
    plain = VQVAENATGenerator(built.task.target_dictionary, eos="last-latent").generate(
        [model], sample
    )
    dedup = VQVAENATGenerator(
        built.task.target_dictionary, eos="last-latent", dedup=True
    ).generate([model], sample)
    for (p,), (d,) in zip(plain, dedup):
        body = p["tokens"][:-1].tolist()
        expected = [t for i, t in enumerate(body) if i == 0 or t != body[i - 1]]
        assert (
            d["tokens"][:-1].tolist() == expected and d["tokens"][-1] == p["tokens"][-1]
        )
        assert d["positional_scores"].shape == d["tokens"].shape
    assert any(len(d["tokens"]) < len(p["tokens"]) for (p,), (d,) in zip(plain, dedup))


# The search over latents ----------------------------------------------------------------


def _code_log_prob(model, encoder_out, codes):
    """Teacher-forced log-probability of one sentence's codes (1, N, S), recomputed."""
    predictor = model.latent_predictor
    with torch.no_grad():
        logp = predictor(predictor.embed(codes), encoder_out).float().log_softmax(-1)
    return float(logp.gather(-1, codes.unsqueeze(-1)).sum())


def _encode(model, sample):
    net_input = sample["net_input"]
    return model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])


def test_greedy_translation_is_a_direct_decoding_at_any_batch_size(
    build_vqvae, make_sample
):
    """The cached, batched generator against a slow one-sentence decoding written out here."""
    built = build_vqvae("--bottleneck", "hard_em")
    model, task = built.model.eval(), built.task
    generator = task.build_generator([model], built.args)
    dictionary = task.target_dictionary
    batched = _translate(task, model, generator, "test", batch_size=8)
    predictor = model.latent_predictor
    for i in range(13):
        sample = make_sample(task, "test", [i])
        src_lengths = sample["net_input"]["src_lengths"]
        with torch.no_grad():
            encoder_out = _encode(model, sample)
            count = int(model.inference_latent_counts(encoder_out, src_lengths)[0])
            codes = torch.zeros(1, 0, 1, dtype=torch.long)
            for step in range(count):  # recompute the whole prefix at every step
                padded = torch.cat([codes, codes.new_zeros(1, 1, 1)], dim=1)
                logits = predictor(predictor.embed(padded), encoder_out)[:, step]
                codes = torch.cat([codes, logits.argmax(-1).view(1, 1, 1)], dim=1)
            logits = model.decode(
                model.bottleneck.lookup(codes),
                torch.zeros(1, count, dtype=torch.bool),
                encoder_out,
            )
        logits[..., [dictionary.pad(), dictionary.bos()]] = float(
            "-inf"
        )  # never emitted
        lprobs = logits[0].float().log_softmax(-1)
        best = lprobs.argmax(-1).tolist()
        end = best.index(dictionary.eos()) if dictionary.eos() in best else len(best)
        without_eos = lprobs.clone()
        without_eos[:, dictionary.eos()] = float("-inf")
        expected = without_eos[:end].argmax(-1).tolist() + [dictionary.eos()]
        hypo = batched[i][0]
        assert hypo["tokens"].tolist() == expected, i
        assert torch.equal(hypo["latent_codes"], codes[0])
        eos_score = (
            lprobs[end, dictionary.eos()] if end < len(best) else torch.tensor(0.0)
        )
        scores = torch.cat([without_eos[:end].max(-1).values, eos_score.view(1)])
        torch.testing.assert_close(hypo["positional_scores"], scores)
        joint = _code_log_prob(model, encoder_out, codes) + float(scores.sum())
        assert hypo["rank_score"] == pytest.approx(joint / len(scores), abs=1e-4)


def _search(
    built, *, beam=1, samples=0, lengths=1, rescore="latent", models=None, batch_size=8
):
    task = built.task
    built.model.eval()
    generator = VQVAENATGenerator(
        task.target_dictionary,
        latent_beam=beam,
        latent_samples=samples,
        length_beam=lengths,
        rescore=rescore,
    )
    return _translate(
        task, built.model, generator, "test", batch_size=batch_size, models=models
    )


def test_latent_beam_returns_every_beam_best_first_and_exact_with_the_whole_codebook(
    build_vqvae, make_sample
):
    built = build_vqvae("--bottleneck", "hard_em", "--codebook-size", "6")
    model = built.model.eval()
    greedy = _search(built)
    beams = {bs: _search(built, beam=6, batch_size=bs) for bs in (1, 8)}
    for i in range(13):
        hypos = beams[8][i]
        assert len(hypos) == 6
        ranks = [h["rank_score"] for h in hypos]
        assert ranks == sorted(ranks, reverse=True)
        codes = [tuple(h["latent_codes"].flatten().tolist()) for h in hypos]
        assert len(set(codes)) == 6  # six different code sequences
        sample = make_sample(built.task, "test", [i])
        with torch.no_grad():
            encoder_out = _encode(model, sample)
        for h in hypos:  # a beam's score is its codes' teacher-forced log-probability
            assert h["rank_score"] == pytest.approx(
                _code_log_prob(model, encoder_out, h["latent_codes"][None]), abs=1e-4
            )
        # With as many beams as codes, beam search over <= 2 latents is exhaustive.
        count = hypos[0]["latent_codes"].shape[0]
        if count <= 2:
            every = torch.cartesian_prod(*[torch.arange(6)] * count).view(-1, count, 1)
            best = max(_code_log_prob(model, encoder_out, c[None]) for c in every)
            assert ranks[0] == pytest.approx(best, abs=1e-4)
        assert ranks[0] >= greedy[i][0]["rank_score"] - 1e-4
        for a, b in zip(hypos, beams[1][i]):  # the same at batch size 1
            assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(
                a["latent_codes"], b["latent_codes"]
            )
    assert any(len(beams[8][i][0]["latent_codes"]) <= 2 for i in range(13))
    assert any(len(beams[8][i][0]["latent_codes"]) > 1 for i in range(13))


def test_sampled_candidates_follow_the_predictor_and_the_greedy_one_comes_first_in_its_beam(
    build_vqvae, make_sample
):
    built = build_vqvae("--bottleneck", "hard_em")
    model = built.model.eval()
    greedy = _search(built)
    torch.manual_seed(3)
    sampled = _search(built, samples=3)
    differs = False
    for i in range(13):
        hypos = sampled[i]
        assert len(hypos) == 4
        sample = make_sample(built.task, "test", [i])
        with torch.no_grad():
            encoder_out = _encode(model, sample)
        for h in hypos:
            assert h["rank_score"] == pytest.approx(
                _code_log_prob(model, encoder_out, h["latent_codes"][None]), abs=1e-4
            )
        greedy_codes = greedy[i][0]["latent_codes"]
        assert any(torch.equal(h["latent_codes"], greedy_codes) for h in hypos)
        differs |= any(not torch.equal(h["latent_codes"], greedy_codes) for h in hypos)
    assert differs  # an untrained predictor is far from deterministic


def test_length_beam_decodes_the_classifiers_best_lengths(build_vqvae, make_sample):
    built = build_vqvae("--bottleneck", "hard_em", "--gen-eos", "length")
    model, task = built.model.eval(), built.task
    generator = VQVAENATGenerator(
        task.target_dictionary, length_beam=3, eos="length", rescore="latent"
    )
    for i in range(13):
        sample = make_sample(task, "test", [i])
        hypos = generator.generate([model], sample)[0]
        assert len(hypos) == 3
        src_lengths = sample["net_input"]["src_lengths"]
        with torch.no_grad():
            encoder_out = _encode(model, sample)
            logp = model.length_head(encoder_out).float().log_softmax(-1)[0]
        prior, classes = logp.topk(3)
        lengths = model.length_head.lengths(classes, src_lengths).tolist()
        by_length = {}
        for h in hypos:
            count = h["latent_codes"].shape[0]
            code_logp = _code_log_prob(model, encoder_out, h["latent_codes"][None])
            matches = [
                k
                for k, n in enumerate(lengths)
                if math.ceil(n / RATIO) == count
                and h["rank_score"]
                == pytest.approx(float(prior[k]) + code_logp, abs=1e-4)
                and h["tokens"].numel() == n
            ]
            assert matches, (i, lengths, h["tokens"].numel(), count)
            by_length[matches[0]] = h
        assert sorted(by_length) == [0, 1, 2]


def test_model_rescoring_ranks_by_the_joint_log_probability_per_token(build_vqvae):
    built = build_vqvae("--bottleneck", "hard_em")
    by_latent = _search(built, beam=3, samples=2)
    torch.manual_seed(0)
    by_model = _search(built, beam=3, samples=2, rescore="model")
    for i in range(13):
        hypos = by_model[i]
        ranks = [h["rank_score"] for h in hypos]
        assert ranks == sorted(ranks, reverse=True)
        beams = {
            tuple(h["latent_codes"].flatten().tolist()): h for h in by_latent[i][:3]
        }
        for h in hypos:
            key = tuple(h["latent_codes"].flatten().tolist())
            if (
                key in beams
            ):  # the same beam: its latent score is known from the other run
                joint = beams[key]["rank_score"] + float(h["positional_scores"].sum())
                assert h["rank_score"] == pytest.approx(
                    joint / h["tokens"].numel(), abs=1e-4
                )


def test_teacher_rescoring_ranks_by_the_teachers_mean_token_log_probability(
    build_vqvae, tiny_transformer, make_sample
):
    built = build_vqvae("--bottleneck", "hard_em")
    teacher = tiny_transformer.model.eval()
    model, task = built.model.eval(), built.task
    generator = VQVAENATGenerator(
        task.target_dictionary, latent_beam=3, latent_samples=1, rescore="teacher"
    )
    eos = task.target_dictionary.eos()
    results = _translate(
        task, model, generator, "test", batch_size=8, models=[model, teacher]
    )
    for i in range(13):
        hypos = results[i]
        assert len(hypos) == 4
        ranks = [h["rank_score"] for h in hypos]
        assert ranks == sorted(ranks, reverse=True)
        sample = make_sample(task, "test", [i])
        net_input = sample["net_input"]
        for h in hypos:  # one candidate at a time, through the teacher's full forward
            tokens = h["tokens"][None]
            previous = torch.cat([tokens.new_full((1, 1), eos), tokens[:, :-1]], dim=1)
            with torch.no_grad():
                out = teacher(
                    net_input["src_tokens"], net_input["src_lengths"], previous
                )
                logp = teacher.get_normalized_probs(out, log_probs=True)[0]
            expected = logp.gather(-1, tokens[0][:, None]).mean()
            assert h["rank_score"] == pytest.approx(float(expected), abs=1e-4)


def test_teacher_rescoring_needs_an_autoregressive_second_checkpoint(
    build_vqvae, tiny_transformer, make_sample
):
    built = build_vqvae("--gen-rescore", "teacher")
    model = built.model.eval()
    sample = make_sample(built.task, "test", [0])
    missing = "needs the autoregressive teacher as a second checkpoint"
    with pytest.raises(OptionError, match=missing):  # when fairseq-generate builds it
        built.task.build_generator([model], built.args)
    generator = VQVAENATGenerator(built.task.target_dictionary, rescore="teacher")
    with pytest.raises(OptionError, match=missing):
        generator.generate([model], sample)
    with pytest.raises(
        ValueError, match="the second checkpoint must be an autoregressive model"
    ):
        built.task.build_generator([model, model], built.args)


@pytest.mark.parametrize(
    "flags, message",
    [
        (dict(latent_beam=0), "--gen-latent-beam must be >= 1, got 0"),
        (dict(latent_samples=-1), "--gen-latent-samples must be >= 0, got -1"),
        (dict(length_beam=0), "--gen-length-beam must be >= 1, got 0"),
        (
            dict(rescore="bleu"),
            "--gen-rescore must be one of latent, model, teacher, got 'bleu'",
        ),
    ],
)
def test_search_options_are_validated(flags, message):
    from fairseq.data import Dictionary

    with pytest.raises(ValueError, match=message):
        VQVAENATGenerator(Dictionary(), **flags)


def test_search_refusals_say_what_to_change(build_vqvae, make_sample):
    sample = make_sample(build_vqvae().task, "test", [0])
    built = build_vqvae("--latent-length", "source")
    for flags, message in (  # refused where fairseq-generate builds the generator
        (("--latent-length", "source", "--gen-length-beam", "2"), "needs a model"),
        (("--num-slices", "2", "--gen-latent-beam", "2"), "needs --num-slices 1"),
        (("--codebook-size", "4", "--gen-latent-beam", "5"), "more than the 4 codes"),
        (("--gen-length-beam", "257"), "more than the 256 length classes"),
    ):
        refused = build_vqvae(*flags)
        with pytest.raises(OptionError, match=message):
            refused.task.build_generator([refused.model], refused.args)
    with pytest.raises(
        ValueError,
        match="--gen-length-beam needs a model trained with --latent-length predict",
    ):
        VQVAENATGenerator(built.task.target_dictionary, length_beam=2).generate(
            [built.model.eval()], sample
        )
    sliced = build_vqvae("--num-slices", "2")
    with pytest.raises(ValueError, match="latent beam search needs --num-slices 1"):
        VQVAENATGenerator(sliced.task.target_dictionary, latent_beam=2).generate(
            [sliced.model.eval()], sample
        )
    small = build_vqvae("--codebook-size", "4")
    with pytest.raises(
        ValueError, match="--gen-latent-beam 5 is more than the 4 codes per slice"
    ):
        VQVAENATGenerator(small.task.target_dictionary, latent_beam=5).generate(
            [small.model.eval()], sample
        )
    # Sampling works with slices: each slice is drawn from its own distribution.
    hypos = VQVAENATGenerator(sliced.task.target_dictionary, latent_samples=2).generate(
        [sliced.model.eval()], sample
    )
    assert len(hypos[0]) == 3 and hypos[0][0]["latent_codes"].shape[1] == 2


def test_score_reference_is_refused(build_vqvae):
    built = build_vqvae()
    built.args.score_reference = True
    with pytest.raises(ValueError, match="--score-reference is not supported"):
        built.task.build_generator([built.model], built.args)


@pytest.mark.parametrize(
    "name, value, flag",
    [
        ("print_alignment", "hard", "--print-alignment"),
        ("retain_iter_history", True, "--retain-iter-history"),
    ],
)
def test_outputs_a_one_pass_decoder_cannot_give_are_refused(
    build_vqvae, name, value, flag
):
    built = build_vqvae()
    setattr(built.args, name, None if name == "print_alignment" else False)
    built.task.build_generator([built.model], built.args)  # the defaults pass
    setattr(built.args, name, value)
    with pytest.raises(ValueError, match=f"{flag} is not supported by vqvae_nat"):
        built.task.build_generator([built.model], built.args)


@pytest.mark.parametrize(
    "flags, expected",
    [
        ((), (1, 0, 1, "model", "first", False, False)),  # the defaults
        (
            ("--gen-latent-beam", "3", "--gen-latent-samples", "2")
            + ("--gen-length-beam", "2", "--gen-rescore", "latent")
            + ("--gen-eos", "length", "--gen-dedup", "--gen-oracle-latents"),
            (3, 2, 2, "latent", "length", True, True),
        ),
    ],
)
def test_search_options_reach_the_generator(build_vqvae, flags, expected):
    built = build_vqvae(*flags)
    g = built.task.build_generator([built.model], built.args)
    assert (
        g.latent_beam,
        g.latent_samples,
        g.length_beam,
        g.rescore,
        g.eos_policy,
        g.dedup,
        g.oracle_latents,
    ) == expected


def test_generation_options_win_over_the_tasks_as_the_hubs_keywords(build_vqvae):
    """hub.translate(..., gen_latent_beam=3) reaches the generator through ``args``, as
    fairseq's iter_decode_* options; options absent from ``args`` come from the task, and
    the length cap, when ``args`` has none (--eval-bleu-args), is fairseq-generate's."""
    import argparse

    built = build_vqvae("--gen-latent-samples", "2")
    args = argparse.Namespace(gen_latent_beam=3, gen_rescore="latent", beam=5)
    g = built.task.build_generator([built.model], args)
    assert (g.latent_beam, g.latent_samples, g.rescore, g.max_len) == (
        3,
        2,
        "latent",
        (0, 200),
    )


@pytest.mark.parametrize(
    "name, value",
    [
        ("no_repeat_ngram_size", 2),
        ("sampling", True),
        ("lenpen", 0.6),
        ("min_len", 5),
        ("temperature", 0.7),  # --gen-latent-samples draws from the predictor as it is
    ],
)
def test_autoregressive_search_options_are_refused(build_vqvae, name, value):
    built = build_vqvae()
    setattr(built.args, name, value)
    flag = "--" + name.replace("_", "-")
    with pytest.raises(ValueError, match=f"{flag} is an option of fairseq's"):
        built.task.build_generator([built.model], built.args)


def test_max_len_caps_every_translation_per_sentence(build_vqvae, make_sample):
    built = build_vqvae()
    model, task = built.model.eval(), built.task
    sample = make_sample(task, "test", ids_by_target_length(task, "test")[-4:])
    src_lengths = sample["net_input"]["src_lengths"].tolist()
    # fairseq-generate's defaults (a=0, b=200) change nothing here
    from fairseq.dataclass.configs import GenerationConfig

    defaults = GenerationConfig()
    built.args.max_len_a, built.args.max_len_b = defaults.max_len_a, defaults.max_len_b
    unlimited = task.build_generator([model], built.args).generate([model], sample)
    plain = VQVAENATGenerator(task.target_dictionary).generate([model], sample)
    assert [h[0]["tokens"].tolist() for h in unlimited] == [
        h[0]["tokens"].tolist() for h in plain
    ]
    built.args.max_len_a, built.args.max_len_b = 0.25, 1
    capped = task.build_generator([model], built.args).generate([model], sample)
    for hypos, full, n in zip(capped, plain, src_lengths, strict=True):
        limit = int(0.25 * n + 1)
        tokens = hypos[0]["tokens"].tolist()
        assert len(tokens) - 1 <= limit and tokens[-1] == task.target_dictionary.eos()
        assert tokens[:-1] == full[0]["tokens"].tolist()[: len(tokens) - 1]
    assert any(
        len(full[0]["tokens"]) - 1 > int(0.25 * n + 1)
        for full, n in zip(plain, src_lengths)
    )


def test_a_misspelt_generation_option_is_refused_with_the_nearest_name(build_vqvae):
    """hub.translate(..., gen_latnet_beam=4) and --eval-bleu-args '{"gen_latnet_beam": 4}'
    reach build_generator as unknown keys; fairseq would drop them."""
    import argparse

    from fairseq.dataclass.configs import GenerationConfig
    from omegaconf import OmegaConf, open_dict

    built = build_vqvae()
    hub_args = OmegaConf.structured(GenerationConfig())
    with open_dict(hub_args):  # what GeneratorHubInterface.generate does with **kwargs
        hub_args.gen_latnet_beam = 4
    for args in (hub_args, argparse.Namespace(gen_latnet_beam=4, beam=1)):
        with pytest.raises(
            OptionError, match="'gen_latnet_beam'; did you mean gen_latent_beam"
        ):
            built.task.build_generator([built.model], args)
    ok = argparse.Namespace(gen_latent_beam=2, beam=1, max_len_b=50)
    assert built.task.build_generator([built.model], ok).latent_beam == 2


def test_more_hypotheses_than_candidates_are_refused(build_vqvae):
    built = build_vqvae()
    built.args.nbest = 3
    with pytest.raises(
        OptionError, match="--nbest 3 asks for more hypotheses than the 1"
    ):
        built.task.build_generator([built.model], built.args)
    built.args.gen_latent_beam = 3
    assert built.task.build_generator([built.model], built.args).latent_beam == 3


def test_generating_the_training_split_keeps_every_sentence(
    build_vqvae, monkeypatch, caplog
):
    """fairseq-generate --gen-subset train: fairseq's batching kept the batch-size multiple of
    8 there (296 of 300 sentences translated); only the trainer's own iterator over the
    training set (it passes skip_remainder_batch) keeps it, and it says how many pairs no batch
    holds."""
    import logging

    from fairseq.tasks.translation import TranslationTask

    from fairseq_vqvae import batches

    built = build_vqvae()
    task = built.task
    task.load_dataset("train")
    task.load_dataset("valid")
    asked = []
    original = TranslationTask.get_batch_iterator

    def spy(self, dataset, **kwargs):
        asked.append(kwargs["required_batch_size_multiple"])
        return original(self, dataset, **kwargs)

    monkeypatch.setattr(TranslationTask, "get_batch_iterator", spy)
    train, valid = task.dataset("train"), task.dataset("valid")
    for dataset, kwargs in (
        (train, {}),  # fairseq-generate --gen-subset train
        (train, {"skip_remainder_batch": False}),  # the trainer's training iterator
        (valid, {"skip_remainder_batch": False}),  # the trainer's validation iterator
    ):
        task.get_batch_iterator(
            dataset, max_tokens=60, required_batch_size_multiple=8, **kwargs
        )
    assert asked == [1, 8, 1]

    class Batches:
        frozen_batches = [[0, 1, 2], [3, 4]]

    with caplog.at_level(logging.INFO, logger="fairseq_vqvae.batches"):
        batches.log_pairs_in_no_batch(Batches(), 9, 8)
    assert "4 of 9 training pairs are in no batch" in caplog.text


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_translates_as_the_fp32_one(build_vqvae, dtype):
    """fairseq-generate's --fp16 / --bf16 (model.half() / .bfloat16(), for a GPU) decode the
    same sentences: run here on the CPU, the path a GPU takes, within half precision's rounding."""
    built = train_a_little(build_vqvae("--bottleneck", "hard_em"))
    model, task = built.model, built.task
    generator = task.build_generator([model], built.args)
    full = _translate(task, model, generator, "test", batch_size=8)
    half = model.to(dtype)
    for batch_size in (1, 8):
        lowered = _translate(task, half, generator, "test", batch_size=batch_size)
        assert lowered.keys() == full.keys()
        same = 0
        for i, hypos in full.items():
            hypo = lowered[i][0]
            assert hypo["positional_scores"].dtype == torch.float32
            assert hypo["tokens"][-1] == task.target_dictionary.eos()
            same += hypo["tokens"].tolist() == hypos[0]["tokens"].tolist()
        assert same >= 0.8 * len(full), (dtype, batch_size, same, len(full))
