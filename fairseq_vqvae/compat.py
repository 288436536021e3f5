"""Let fairseq 0.12 checkpoints load under torch >= 2.6.

torch 2.6 made ``torch.load(weights_only=True)`` the default, and fairseq's
``checkpoint_utils.load_checkpoint_to_cpu`` calls ``torch.load`` without the argument, so
every fairseq checkpoint (which pickles an ``argparse.Namespace``) fails to load with
"GLOBAL argparse.Namespace was not an allowed global" (fairseq issues #5610, #5603). We allow
exactly the globals fairseq checkpoints contain; ``weights_only`` stays on for everything else.
"""
import argparse

import torch

SAFE_GLOBALS = [argparse.Namespace]

if hasattr(torch.serialization, "add_safe_globals"):
    torch.serialization.add_safe_globals(SAFE_GLOBALS)
