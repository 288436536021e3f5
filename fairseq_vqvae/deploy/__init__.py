"""Deployment of a vqvae_nat student without fairseq: ``export`` writes ONNX graphs of the
generator's default path (with torch and fairseq), ``runtime`` runs them on ONNX Runtime. The
export copies ``runtime.py`` into the model folder, where it needs numpy and onnxruntime only.
"""
