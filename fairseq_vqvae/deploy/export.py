"""Export a ``vqvae_nat`` checkpoint for ONNX Runtime (``scripts/export_onnx.py``): the three
graphs of ``deploy.graphs``, optionally int8 (ONNX Runtime's dynamic quantization), the
dictionaries, ``translator.json`` (what the runtime needs) and copies of ``deploy/runtime.py``
and ``deploy/runtime_search.py``.

The generator's search over predicted codes is exported: greedy codes or a beam over them
(the latent step keeps its ``--latent-top-k`` best codes), one or several lengths, ranked by
``latent``, ``model`` or an autoregressive ``teacher`` the runtime is given; ``--gen-eos``,
``--gen-dedup``, ``--max-len-a/b`` and the search's options are the runtime's (saved as its
defaults). Everything else is refused in one line (``check_exportable``).
"""

import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from ..errors import OptionError
from ..lengths import LENGTH_OFFSET
from . import runtime, runtime_options, runtime_search
from .exportable import (
    RUNTIME_OPTIONS,
    SEARCH_DEFAULTS,
    check_exportable,
    latent_top_k,
)
from .graphs import DecoderGraph, EncoderGraph, LatentStepGraph
from .int8 import quantize

logger = logging.getLogger(__name__)

__all__ = ["export", "export_model", "GRAPH_FILES"]

OPSET = 17
GRAPH_FILES = {
    "encoder": "encoder.onnx",
    "latent_step": "latent_step.onnx",
    "decoder": "decoder.onnx",
}


def export(
    checkpoint,
    data,
    out_dir,
    int8: bool = False,
    options: dict | None = None,
    top_k: int | None = None,
) -> Path:
    """Load ``checkpoint`` (with the dictionaries of the data-bin ``data``) and export it to
    ``out_dir`` (``export_model``)."""
    import fairseq  # noqa: F401  (before the plugin's register: it imports fairseq's parts)
    from fairseq import checkpoint_utils

    from .. import register

    register()
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(data)}
    )
    if cfg.task._name != "translation_vqvae":
        raise OptionError(
            f"{checkpoint} was trained with --task {cfg.task._name}: the ONNX export is "
            f"for vqvae_nat students (--task translation_vqvae)"
        )
    saved = {k: task.cfg[k] for k in RUNTIME_OPTIONS if k in task.cfg}
    saved.update({k: task.cfg[k] for k in SEARCH_DEFAULTS if k in task.cfg})
    return export_model(
        models[0].eval(), task, out_dir, int8, {**saved, **(options or {})}, top_k
    )


def export_model(
    model, task, out_dir, int8: bool = False, options=None, top_k=None
) -> Path:
    """Write the graphs, dictionaries, ``translator.json``, ``runtime.py`` and
    ``runtime_search.py`` of ``model`` (a ``vqvae_nat`` in evaluation, fp32) to ``out_dir``
    (created; an earlier export there is replaced, any other non-empty folder refused);
    ``top_k``: the latent step's best codes kept (--latent-top-k; None: min(16, K))."""
    options = {**RUNTIME_OPTIONS, **(options or {})}
    model = model.eval()
    check_exportable(model, options, top_k)
    top_k = latent_top_k(model, top_k)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / runtime.CONFIG).is_file():
            raise OptionError(f"{out_dir} is not empty and holds no earlier export")
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.float()
    tgt_dict, src_dict = task.target_dictionary, task.source_dictionary
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for name, path in _export_graphs(model, tgt_dict, Path(tmp), top_k).items():
            target = out_dir / GRAPH_FILES[name]
            if int8:
                quantize(path, target)
            else:
                shutil.copyfile(path, target)
    src_dict.save(str(out_dir / "dict.source.txt"))
    tgt_dict.save(str(out_dir / "dict.target.txt"))
    config = _config(model, tgt_dict, src_dict, options, int8)
    config["latent_top_k"] = top_k
    (out_dir / runtime.CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    for module in (
        runtime,
        runtime_options,
        runtime_search,
    ):  # imported beside runtime.py
        shutil.copyfile(module.__file__, out_dir / Path(module.__file__).name)
    # The runtime reads the dictionaries back as fairseq does, or the ids would not match.
    for side, dictionary in (("source", src_dict), ("target", tgt_dict)):
        read = runtime.Vocabulary(out_dir / config[side]["dictionary"], config[side])
        if read.symbols != list(dictionary.symbols):
            raise OptionError(
                f"the {side} dictionary does not read back as it was saved"
            )
    return out_dir


def _config(model, tgt_dict, src_dict, options, int8) -> dict:
    predictor = model.latent_predictor
    attention = predictor.layers[0].self_attn
    side = {
        "source": (src_dict, "dict.source.txt"),
        "target": (tgt_dict, "dict.target.txt"),
    }
    return {
        "format": runtime.FORMAT,
        "precision": "int8" if int8 else "fp32",
        "graphs": GRAPH_FILES,
        **{
            name: {
                "dictionary": file,
                "specials": list(d.symbols[: d.nspecial]),
                "pad": d.pad(),
                "eos": d.eos(),
                "unk": d.unk(),
            }
            for name, (d, file) in side.items()
        },
        "compress_steps": model.cfg.compress_steps,
        "ratio": model.ratio,
        "max_latents": model.max_latents,
        "max_source_positions": model.encoder.max_source_positions,
        "num_slices": predictor.num_slices,
        "length_head": model.length_head is not None,
        "length_classes": model.length_classes or 0,
        "length_offset": LENGTH_OFFSET,
        "codebook_size": predictor.codebook_size,
        "cache": {
            "layers": len(predictor.layers),
            "heads": attention.num_heads,
            "head_dim": attention.head_dim,
        },
        "eos_policy": str(options["gen_eos"]),
        "dedup": bool(options["gen_dedup"]),
        "max_len_a": options["max_len_a"],
        "max_len_b": options["max_len_b"],
        "latent_beam": int(options["gen_latent_beam"]),
        "length_beam": int(options["gen_length_beam"]),
        "rescore": str(options["gen_rescore"]),
        "exported_with": {"torch": torch.__version__},
    }


# The dynamic axes of the graphs' inputs and outputs (named for the export's readers; ONNX
# Runtime takes any size there).
BATCH, SOURCE = {0: "batch"}, {0: "batch", 1: "source"}
MEMORY = {0: "batch", 2: "source"}  # (B, H, S, C / H)
PAST, STEPS = {0: "batch", 2: "past"}, {0: "batch", 2: "steps"}
POSITIONS, WINDOW = {0: "batch", 1: "positions"}, {0: "batch", 1: "window"}


def _per_layer(prefix: str, layers: int, axes: dict) -> dict:
    """``{prefix_keys_0: axes, prefix_values_0: axes, ...}``: a cache, one layer at a time."""
    return {
        f"{prefix}_{part}_{i}": axes
        for i in range(layers)
        for part in ("keys", "values")
    }


def _axes(layers: int) -> dict:
    """Each graph's (inputs, outputs) in order, with their dynamic axes."""
    memory = _per_layer("memory", layers, MEMORY)
    return {
        "encoder": (
            {"src_tokens": SOURCE},
            {
                "encoder_out": SOURCE,
                "lengths": BATCH,
                "num_latents": BATCH,
                "length_logp": BATCH,
                **memory,
            },
        ),
        "latent_step": (
            {"codes": BATCH, "step": {}, "lengths": BATCH, "padding": SOURCE}
            | _per_layer("past", layers, PAST)
            | memory,
            {
                "next_codes": BATCH,
                "top_logp": BATCH,
                "top_codes": BATCH,
                **_per_layer("new", layers, STEPS),
            },
        ),
        "decoder": (
            {
                "codes": {0: "batch", 1: "latents"},
                "encoder_out": SOURCE,
                "padding": SOURCE,
                "eos_window": {},
            },
            {
                "tokens": POSITIONS,
                "eos_best": POSITIONS,
                "eos_scores": WINDOW,
                "token_scores": WINDOW,
            },
        ),
    }


def _examples(model, tgt_dict, top_k: int) -> dict:
    """Each graph and the inputs it is traced on: two sentences (one padded), a second
    latent step, two latents; sizes above 1, so that no axis is traced as a constant 1."""
    pad, eos, word = tgt_dict.pad(), tgt_dict.eos(), tgt_dict.nspecial
    src = torch.tensor([[word, word + 1, word, eos], [pad, word + 1, word, eos]])
    encoder = EncoderGraph(model).eval()
    enc, lengths, _, _, *memory = encoder(src)
    predictor = model.latent_predictor
    attention = predictor.layers[0].self_attn
    past = [torch.zeros(2, attention.num_heads, 1, attention.head_dim)] * len(memory)
    slices, padding = predictor.num_slices, src.eq(pad)
    codes = torch.zeros(2, slices, dtype=torch.long)
    banned = [tgt_dict.pad(), tgt_dict.bos()]
    return {
        "encoder": (encoder, (src,)),
        "latent_step": (
            LatentStepGraph(model, top_k).eval(),
            (codes, torch.tensor([1]), lengths, padding, *past, *memory),
        ),
        "decoder": (
            DecoderGraph(model, banned, eos).eval(),
            (torch.zeros(2, 2, slices, dtype=torch.long), enc, padding)
            + (torch.tensor([model.ratio]),),
        ),
    }


def _export_graphs(model, tgt_dict, tmp: Path, top_k: int) -> dict:
    """fp32 ONNX files of the three graphs in ``tmp``."""
    paths = {}
    axes = _axes(len(model.latent_predictor.layers))
    for name, (graph, inputs) in _examples(model, tgt_dict, top_k).items():
        input_axes, output_axes = axes[name]
        paths[name] = tmp / GRAPH_FILES[name]
        with warnings.catch_warnings():  # the TorchScript exporter is marked deprecated
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                inputs,
                str(paths[name]),
                input_names=list(input_axes),
                output_names=list(output_axes),
                dynamic_axes={
                    k: v for k, v in {**input_axes, **output_axes}.items() if v
                },
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    return paths
