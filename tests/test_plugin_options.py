"""scripts/plugin_options.py: the options fairseq's --help cannot show."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plugin_options.py"


def _run(*args):
    return subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=120
    )


def test_lists_every_group_with_defaults_and_help():
    result = _run()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for heading in (
        "--arch vqvae_nat*:",
        "--criterion vqvae_em:",
        "--task translation_vqvae",
    ):
        assert heading in out
    assert "  --bottleneck (default: " in out and "  --num-samples (default: " in out
    assert "  --gen-eos (default: 'first')" in out and "'last-latent' = EOS only" in out
    assert "  --gen-dedup (default: False)" in out
    assert (
        "  --source-lang" not in out
    )  # fairseq's own translation options are not repeated


def test_only_one_group():
    result = _run("--only", "task")
    assert result.returncode == 0, result.stderr
    assert (
        "--task translation_vqvae" in result.stdout
        and "--bottleneck" not in result.stdout
    )
    bad = _run("--only", "optimizer")
    assert bad.returncode != 0 and "invalid choice" in bad.stderr


def test_no_plugin_option_has_the_name_of_a_fairseq_option():
    """fairseq fills its own options before a model's presets run, so a plugin option with a
    fairseq name silently takes fairseq's default (this happened to --ema-decay). Names the
    plugin shares with fairseq's Transformer on purpose (--encoder-layers, --dropout, ...)
    are model options, which fairseq only adds for the chosen --arch, so they are allowed."""
    import dataclasses

    sys.path.insert(0, str(SCRIPT.parent))
    from fairseq.dataclass.configs import FairseqConfig
    from plugin_options import option_groups

    per_arch = {
        "model",
        "task",
        "criterion",
        "optimizer",
        "lr_scheduler",
        "scoring",
        "bpe",
        "tokenizer",
    }
    fairseq_names = set()
    for group in dataclasses.fields(FairseqConfig):
        if group.name in per_arch:
            continue
        if dataclasses.is_dataclass(group.type):
            fairseq_names |= {f.name for f in dataclasses.fields(group.type)}
    assert (
        "ema_decay" in fairseq_names and "seed" in fairseq_names
    )  # the check sees fairseq's groups
    ours = {
        f.name
        for _, fields in option_groups().values()
        for f in fields
        if not f.name.startswith("_")
    }
    assert "codebook_decay" in ours
    assert not ours & fairseq_names, sorted(ours & fairseq_names)


def test_no_plugin_option_has_the_name_of_an_option_in_the_same_parser():
    """The per-arch groups left out above still share one parser with the plugin's options:
    the task it extends (translation), and the optimizer and schedule of its recipes. fairseq
    skips a second add_argument of a taken name silently, so a clash there would be lost."""
    import dataclasses

    sys.path.insert(0, str(SCRIPT.parent))
    from fairseq.optim.adam import FairseqAdamConfig
    from fairseq.optim.lr_scheduler.inverse_square_root_schedule import (
        InverseSquareRootLRScheduleConfig,
    )
    from fairseq.tasks.translation import TranslationConfig
    from plugin_options import option_groups

    alongside = {
        f.name
        for config in (
            TranslationConfig,
            FairseqAdamConfig,
            InverseSquareRootLRScheduleConfig,
        )
        for f in dataclasses.fields(config)
    }
    assert {"eval_bleu", "adam_betas", "warmup_updates"} <= alongside
    ours = {
        f.name
        for _, fields in option_groups().values()
        for f in fields
        # ${task.max_source_positions}: fairseq's own value, interpolated, not a new option
        if not f.name.startswith("_") and not str(f.default).startswith("${")
    }
    assert "gen_latent_beam" in ours and "glance_ratio" in ours
    assert not ours & alongside, sorted(ours & alongside)


def test_readme_preset_table_matches_the_presets(tmp_path):
    """README's arch table (d, layers, FFN, heads, K) is what fairseq's parser builds."""
    import re

    from fairseq import options

    import fairseq_vqvae

    fairseq_vqvae.register()

    readme = (SCRIPT.parents[1] / "README.md").read_text()
    rows = re.findall(
        r"^\| `(vqvae_nat\w*)`[^|]*\| (\d+) \| (\d+) / (\d+) / (\d+) \| (\d+) \| (\d+) \| (\d+) \|",
        readme,
        flags=re.M,
    )
    assert {row[0] for row in rows} == {
        "vqvae_nat",
        "vqvae_nat_small",
        "vqvae_nat_tiny",
    }
    for arch, *numbers in rows:
        argv = [str(tmp_path), "--user-dir", str(SCRIPT.parents[1] / "fairseq_vqvae")]
        argv += ["--task", "translation_vqvae", "--arch", arch]
        argv += ["--criterion", "vqvae_em"]
        args = options.parse_args_and_arch(options.get_training_parser(), argv)
        built = [
            args.encoder_embed_dim,
            args.encoder_layers,
            args.decoder_layers,
            args.latent_layers,
            args.encoder_ffn_embed_dim,
            args.encoder_attention_heads,
            args.codebook_size,
        ]
        assert [int(n) for n in numbers] == built, arch
