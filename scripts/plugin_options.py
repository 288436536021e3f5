"""List the command-line options fairseq_vqvae adds to fairseq, with defaults and help.

fairseq's own ``--help`` cannot show them: it prints and exits on its first parsing pass,
before it adds a task's, model's or criterion's options. This reads the same dataclasses
fairseq builds those options from (``VQVAENATConfig``, ``VQVAEEMLossConfig`` and the fields
``TranslationVQVAENATConfig`` adds to fairseq's ``TranslationConfig``).

Usage: python scripts/plugin_options.py [--only model|criterion|task]
"""

import argparse
import dataclasses
import sys
import textwrap


def option_groups():
    import fairseq  # noqa: F401  (registers the plugin's parts on import of the package below)
    from fairseq.tasks.translation import TranslationConfig

    from fairseq_vqvae.config import VQVAENATConfig
    from fairseq_vqvae.criterion import VQVAEEMLossConfig
    from fairseq_vqvae.task import TranslationVQVAENATConfig

    inherited = {f.name for f in dataclasses.fields(TranslationConfig)}
    task_fields = [
        f
        for f in dataclasses.fields(TranslationVQVAENATConfig)
        if f.name not in inherited
    ]
    return {
        "model": ("--arch vqvae_nat*", dataclasses.fields(VQVAENATConfig)),
        "criterion": ("--criterion vqvae_em", dataclasses.fields(VQVAEEMLossConfig)),
        "task": (
            "--task translation_vqvae (beyond fairseq's translation)",
            task_fields,
        ),
    }


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def render(groups) -> str:
    lines = []
    for title, fields in groups.values():
        lines.append(f"{title}:")
        for field in fields:
            if field.name.startswith("_"):
                continue
            flag = "--" + field.name.replace("_", "-")
            lines.append(f"  {flag} (default: {_default(field)!r})")
            text = field.metadata.get("help", "")
            lines += textwrap.wrap(
                text, width=96, initial_indent="      ", subsequent_indent="      "
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", choices=["model", "criterion", "task"], help="one group only"
    )
    args = parser.parse_args(argv)
    groups = option_groups()
    if args.only:
        groups = {args.only: groups[args.only]}
    sys.stdout.write(render(groups))
    return 0


if __name__ == "__main__":
    sys.exit(main())
