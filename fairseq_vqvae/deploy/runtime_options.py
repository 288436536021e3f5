"""The ONNX runtime's options (``OnnxTranslator(**options)``, ``runtime.py``'s command line)
checked in one line each, and the teacher of ``rescore="teacher"``: a ``ctranslate2.Translator``
of the AR teacher or a callable. numpy-free; ctranslate2 is imported only for ``--teacher``.

The export copies this file into the model folder beside ``runtime.py``, which imports it.
"""

__all__ = ["with_overrides", "check_search", "teacher_function", "add_arguments"]

# --gen-rescore and --gen-eos (fairseq_vqvae/hypotheses.py)
RESCORERS = ("latent", "model", "teacher")
EOS_POLICIES = ("first", "last-latent", "length")
SEARCH_OPTIONS = ("latent_beam", "length_beam", "rescore")


def with_overrides(config: dict, overrides: dict) -> dict:
    """``config`` with the runtime options ``OnnxTranslator`` was given, checked."""
    names = {"eos": "eos_policy"}
    unknown = set(overrides) - {"eos", "dedup", "max_len_a", "max_len_b"}
    unknown -= set(SEARCH_OPTIONS)
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


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_search(config: dict, teacher) -> None:
    """Refuse, in one line, a search ``config`` (translator.json with the runtime's options)
    cannot run with ``teacher`` (None, a callable or a ``ctranslate2.Translator``)."""
    beam = _count("latent_beam", config["latent_beam"])
    lengths = _count("length_beam", config["length_beam"])
    if beam > 1 and config["num_slices"] != 1:
        raise ValueError("latent_beam above 1 needs a model with --num-slices 1")
    if beam > config["codebook_size"]:
        raise ValueError(
            f"latent_beam {beam} is more than the {config['codebook_size']} codes per slice"
        )
    if beam > config["latent_top_k"]:
        raise ValueError(
            f"latent_beam {beam} is more than the {config['latent_top_k']} codes per step "
            f"this export keeps: export it again with --latent-top-k {beam}"
        )
    if lengths > 1 and not config["length_head"]:
        raise ValueError(
            "length_beam above 1 needs a model trained with --latent-length predict"
        )
    if lengths > max(config["length_classes"], 1):
        raise ValueError(
            f"length_beam {lengths} is more than the model's {config['length_classes']} "
            f"length classes"
        )
    rescore = config["rescore"]
    if rescore not in RESCORERS:
        raise ValueError(
            f"rescore must be one of {', '.join(RESCORERS)}, got {rescore!r}"
        )
    if rescore == "teacher" and teacher is None:
        raise ValueError(
            "rescore 'teacher' needs teacher= (a ctranslate2.Translator of the AR teacher, "
            "or a callable)"
        )
    if rescore != "teacher" and teacher is not None:
        raise ValueError(
            f"a teacher is read only with rescore='teacher' (rescore is {rescore!r})"
        )


def teacher_function(teacher):
    """``teacher`` (None, a ``ctranslate2.Translator`` or a callable) as a callable (source
    symbol lists, candidate symbol lists) -> mean token log-probabilities, or None."""
    if teacher is None or not hasattr(teacher, "score_batch"):
        if teacher is not None and not callable(teacher):
            raise ValueError("teacher must be a ctranslate2.Translator or a callable")
        return teacher
    return ctranslate2_teacher(teacher)


def ctranslate2_teacher(translator):
    """A ``ctranslate2.Translator`` of the AR teacher as a teacher: each candidate's mean
    token log-probability, EOS included (``Translator.score_batch`` scores the target's
    tokens and the EOS it appends), as ``hypotheses.teacher_scores``."""

    def score(sources, targets):
        results = translator.score_batch(sources, targets, max_input_length=0)
        return [sum(r.log_probs) / len(r.log_probs) for r in results]

    return score


def add_arguments(parser) -> None:
    """``runtime.py``'s search and teacher options (default: the export's)."""
    parser.add_argument("--latent-beam", type=int, help="code sequences per length")
    parser.add_argument("--length-beam", type=int, help="most likely lengths tried")
    parser.add_argument(
        "--rescore", choices=RESCORERS, help="how candidates are ranked"
    )
    parser.add_argument(
        "--teacher", help="--rescore teacher: the AR teacher converted to CTranslate2"
    )
    parser.add_argument(
        "--teacher-compute-type", help="CTranslate2's compute type (default int8)"
    )


def teacher_of_arguments(args):
    """The ``ctranslate2.Translator`` of ``--teacher`` (None without one)."""
    if args.teacher is None:
        if args.teacher_compute_type is not None:
            raise ValueError("--teacher-compute-type needs --teacher")
        return None
    try:
        import ctranslate2
    except ImportError:
        raise ValueError(
            "--teacher needs ctranslate2 (pip install ctranslate2)"
        ) from None
    try:
        return ctranslate2.Translator(
            args.teacher,
            device="cpu",
            compute_type=args.teacher_compute_type or "int8",
            intra_threads=args.threads,
            inter_threads=1,
        )
    except (RuntimeError, ValueError) as error:  # no model there, or a bad compute type
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"--teacher {args.teacher}: {first}") from None
