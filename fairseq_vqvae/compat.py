"""Let fairseq 0.12 checkpoints load under torch >= 2.6.

torch 2.6 made ``torch.load(weights_only=True)`` the default, and fairseq's
``checkpoint_utils.load_checkpoint_to_cpu`` calls ``torch.load`` without the argument, so
every fairseq checkpoint (which pickles an ``argparse.Namespace``) fails to load with
"GLOBAL argparse.Namespace was not an allowed global" (fairseq issues #5610, #5603). We allow
exactly the globals fairseq checkpoints contain; ``weights_only`` stays on for everything else.
Besides the Namespace, a checkpoint written with ``--eval-bleu`` stores the BLEU meters' numpy
arrays (``extra_state["metrics"]``), so numpy arrays, scalars and dtypes are allowed too.
"""

import argparse

import numpy as np
import torch


def _numpy_globals():
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed = [np.ndarray, np.dtype]
    for name in ("_reconstruct", "scalar"):
        func = getattr(multiarray, name)
        # numpy 2 pickles numpy._core.multiarray.X, numpy 1 wrote numpy.core.multiarray.X.
        allowed += [
            (func, f"numpy._core.multiarray.{name}"),
            (func, f"numpy.core.multiarray.{name}"),
        ]
    dtypes = getattr(np, "dtypes", None)
    for name in (
        "Float64DType",
        "Float32DType",
        "Float16DType",
        "Int64DType",
        "Int32DType",
        "BoolDType",
    ):
        if hasattr(dtypes, name):
            allowed.append(getattr(dtypes, name))
    return allowed


SAFE_GLOBALS = [argparse.Namespace, *_numpy_globals()]

if hasattr(torch.serialization, "add_safe_globals"):
    torch.serialization.add_safe_globals(SAFE_GLOBALS)
