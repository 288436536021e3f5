"""Export a vqvae_nat student for ONNX Runtime: model files and a small runtime, no fairseq.

  python scripts/export_onnx.py CHECKPOINT DATA_BIN OUT_DIR [--int8] [--latent-top-k K]
      [--gen-eos POLICY] [--gen-dedup] [--max-len-a A] [--max-len-b B]
      [--gen-latent-beam K] [--gen-length-beam L] [--gen-rescore latent|model|teacher]

OUT_DIR gets encoder.onnx, latent_step.onnx and decoder.onnx (int8 weights with --int8), the
dictionaries of DATA_BIN, translator.json and runtime.py with runtime_search.py and
runtime_options.py (numpy + onnxruntime only)::

    python OUT_DIR/runtime.py OUT_DIR < test.bpe.en > test.bpe.de
    python OUT_DIR/runtime.py OUT_DIR --latent-beam 8 --rescore teacher \
        --teacher teacher.pt.ct2 < test.bpe.en > test.bpe.de   # needs ctranslate2

The generation options are the runtime's defaults (the runtime's own options override them).
Sampled codes, oracle latents and tied code tables are refused in one line. See
docs/performance.md, "ONNX Runtime" (fairseq_vqvae/deploy/).
"""

import argparse
import sys
from pathlib import Path

from fairseq_vqvae.deploy.export import RUNTIME_OPTIONS, export
from fairseq_vqvae.errors import OptionError
from fairseq_vqvae.hypotheses import EOS_POLICIES, RESCORERS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, help="a vqvae_nat checkpoint")
    parser.add_argument("data", type=Path, help="its data-bin (the dictionaries)")
    parser.add_argument("out_dir", type=Path, help="the export's folder (created)")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="int8 weights in the matrix products (ONNX Runtime's dynamic quantization)",
    )
    parser.add_argument(
        "--gen-eos",
        choices=list(EOS_POLICIES),
        help="where a translation ends (default: the checkpoint's, else first)",
    )
    parser.add_argument(
        "--gen-dedup",
        action="store_true",
        default=None,
        help="drop a token equal to the one before it",
    )
    parser.add_argument("--max-len-a", type=float, help="cap: a x |x| + b tokens")
    parser.add_argument(
        "--max-len-b",
        type=int,
        help=f"(default {RUNTIME_OPTIONS['max_len_b']}, as fairseq-generate)",
    )
    parser.add_argument(
        "--latent-top-k",
        type=int,
        help="the best codes per latent step the export keeps, the widest latent beam "
        "(default min(16, codebook size))",
    )
    parser.add_argument("--gen-latent-beam", type=int, help="code sequences per length")
    parser.add_argument("--gen-length-beam", type=int, help="lengths tried")
    parser.add_argument(
        "--gen-rescore", choices=list(RESCORERS), help="how candidates are ranked"
    )
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"checkpoint not found: {args.checkpoint}")
    if not args.data.is_dir():
        parser.error(f"{args.data}: not a folder (the data-bin with the dictionaries)")
    options = {
        name: getattr(args, name)
        for name in RUNTIME_OPTIONS
        if getattr(args, name) is not None
    }
    try:
        out = export(
            args.checkpoint,
            args.data,
            args.out_dir,
            args.int8,
            options,
            args.latent_top_k,
        )
    except OptionError as error:
        parser.error(str(error))
    sys.stderr.write(f"[export_onnx] wrote {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
