"""int8 weights for an exported graph (``scripts/export_onnx.py --int8``): ONNX Runtime's
dynamic quantization of the matrix products with a constant weight."""

import logging
from pathlib import Path

__all__ = ["quantize"]


def quantize(source: Path, target: Path) -> None:
    """Dynamic int8 weights (ONNX Runtime's quantize_dynamic) for the matrix products with a
    constant weight: the linear maps and the vocabulary projection; the length classifier
    (a Gemm) and the embedding and code tables (Gathers) stay fp32."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # ONNX Runtime's platform-independent optimizations first (constant folding): a weight
    # the exporter left behind a Transpose or Reshape is then an initializer to quantize.
    folded = source.with_suffix(".folded.onnx")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = (
        onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    )
    options.optimized_model_filepath = str(folded)
    onnxruntime.InferenceSession(
        str(source), options, providers=["CPUExecutionProvider"]
    )
    source = folded
    graph = onnx.load(str(source)).graph
    weights = {init.name for init in graph.initializer}
    nodes = [
        n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights
    ]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it logs every tensor on the root logger
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            nodes_to_quantize=nodes,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.setLevel(level)
