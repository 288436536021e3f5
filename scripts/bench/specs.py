"""The benchmark's model specifications: NAME=TASK:CHECKPOINT[:K=V,...], and the generation
and task options they set (``scripts/benchmark.py``)."""

import ast
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
USER_DIR = REPO / "fairseq_vqvae"
AR_BEAM_ROW = "AR beam 4"
AR_GREEDY_ROW = "AR greedy"
TASK_DEFAULTS = {
    "translation": {"beam": 4},
    "translation_lev": {
        "iter_decode_max_iter": 0,
        "iter_decode_eos_penalty": 0.0,
        "beam": 1,
    },
    "translation_vqvae": {},
}
SPEC_HELP = 'expected NAME=TASK:CHECKPOINT[:KEY=VALUE,...], e.g. "AR greedy=translation:teacher/checkpoint_best.pt:beam=1"'


class SpecError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# Model specifications


def literal_or_text(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_model_spec(spec: str) -> dict:
    """``NAME=TASK:CHECKPOINT[:KEY=VALUE,...]`` -> {"name", "task", "checkpoint", "args"}.

    NAME may contain '=' (e.g. "Soft EM m=10"), but not ':'.

    Raises:
        SpecError: with a message saying what is wrong.
    """
    parts = spec.split(":", 2)
    if len(parts) < 2:
        raise SpecError(f"--model {spec!r}: no ':' before the checkpoint; {SPEC_HELP}")
    head, checkpoint = parts[0], parts[1]
    name, eq, task = head.rpartition("=")
    if not eq or not name.strip() or not task.strip():
        raise SpecError(
            f"--model {spec!r}: the part before the first ':' must be NAME=TASK; {SPEC_HELP}"
        )
    if not checkpoint.strip():
        raise SpecError(f"--model {spec!r}: empty checkpoint path; {SPEC_HELP}")
    args = {}
    if len(parts) == 3 and parts[2].strip():
        for item in parts[2].split(","):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise SpecError(
                    f"--model {spec!r}: extra argument {item!r} is not KEY=VALUE; {SPEC_HELP}"
                )
            args[key.strip().replace("-", "_")] = literal_or_text(value.strip())
    return {
        "name": name.strip(),
        "task": task.strip(),
        "checkpoint": checkpoint.strip(),
        "args": args,
    }


def load_models_json(path: Path) -> list:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SpecError(f"--models-json {path}: {err}") from err
    if isinstance(entries, dict) and "models" in entries:
        entries = entries["models"]
    if not isinstance(entries, list):
        raise SpecError(
            f"--models-json {path}: expected a list of {{name, task, checkpoint, args}} objects"
        )
    specs = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) and entry.get(k)
            for k in ("name", "task", "checkpoint")
        ):
            raise SpecError(
                f"--models-json {path}: entry {i} needs non-empty string fields name, task, checkpoint"
            )
        args = entry.get("args", {}) or {}
        if not isinstance(args, dict):
            raise SpecError(
                f"--models-json {path}: entry {i}: 'args' must be an object"
            )
        specs.append(
            {
                "name": entry["name"],
                "task": entry["task"],
                "checkpoint": entry["checkpoint"],
                "args": {k.replace("-", "_"): v for k, v in args.items()},
            }
        )
    return specs


def build_generation_config(task_name: str, args: dict):
    """(GenerationConfig with the task's defaults and the generation keys of ``args``, the rest)."""
    from fairseq.dataclass.configs import GenerationConfig

    gen = GenerationConfig()
    fields = set(GenerationConfig.__dataclass_fields__)
    settings = {
        **TASK_DEFAULTS.get(task_name, {}),
        **{k: v for k, v in args.items() if k in fields},
    }
    for key, value in settings.items():
        setattr(gen, key, value)
    others = {k: v for k, v in args.items() if k not in fields}
    return gen, settings, others


def check_known_options(checkpoint: Path, task_name: str, overrides: dict) -> None:
    """Refuse an override that is not an option of the checkpoint's model or task, nor of the
    task's current configuration (an option added after the checkpoint was trained).

    NB: read the checkpoint's configuration before fairseq merges the overrides into it: its
    loader copies every override into a legacy (argparse) configuration, typos included.
    """
    from fairseq import checkpoint_utils
    from fairseq.tasks import TASK_DATACLASS_REGISTRY

    cfg = checkpoint_utils.load_checkpoint_to_cpu(str(checkpoint))["cfg"]
    known = _option_names(cfg.model) | _option_names(cfg.task) | {"data", "eval_bleu"}
    task_dataclass = TASK_DATACLASS_REGISTRY.get(task_name)
    if task_dataclass is not None:
        known |= set(task_dataclass.__dataclass_fields__)
    for key, value in overrides.items():
        if key not in known:
            raise ValueError(
                f"unknown option {key}={value!r}: not a generation, task or model option of this checkpoint"
            )


def _option_names(section) -> set:
    """Keys of a configuration section: an omegaconf node, or the argparse Namespace in which
    fairseq keeps a legacy model's options."""
    if section is None:
        return set()
    return (
        set(vars(section))
        if hasattr(section, "__dict__") and not hasattr(section, "keys")
        else set(section.keys())
    )


def apply_task_options(task, overrides: dict) -> None:
    """Set the spec's task options (e.g. ``gen_eos``) on the loaded task.

    NB: fairseq applies ``arg_overrides`` only to the keys a checkpoint saved, so an option the
    task gained after the checkpoint was written would be dropped without a word.
    """
    from omegaconf import open_dict

    for key, value in overrides.items():
        if key in task.cfg:
            with open_dict(task.cfg):
                task.cfg[key] = value
