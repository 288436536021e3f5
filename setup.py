"""fairseq_vqvae: non-autoregressive translation with an EM-trained VQ-VAE bottleneck.

fairseq itself is deliberately *not* in install_requires: PyPI's fairseq 0.12.2 cannot be
installed on Python 3.11, and the 3.11-compatible ``fairseq-fixed==0.12.3.1`` declares
torchaudio (which pulls a CUDA torch). Install it with ``--no-deps --no-build-isolation``
after the requirements, as ``scripts/setup_env.sh`` does; see the README.
"""

from setuptools import find_packages, setup

setup(
    name="fairseq_vqvae",
    version="0.1.0",
    description="VQ-VAE non-autoregressive translation (Roy et al. 2018) as a fairseq plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["fairseq_vqvae", "fairseq_vqvae.*"]),
    install_requires=[
        "torch>=2.6,<2.14",  # tested with 2.13.0 (CPU); >=2.6 has the weights_only default we handle
        "numpy>=1.24,<3",
        "sacrebleu>=2.3,<3",
        "tqdm",
    ],
    extras_require={
        # fairseq-fixed is installed separately (--no-deps); these are what the plugin uses from it.
        "fairseq": ["hydra-core==1.3.2", "omegaconf==2.3.0"],
        "data": ["sacremoses", "subword-nmt"],
        "plots": ["matplotlib"],
        # the CTranslate2 and ONNX Runtime rows of scripts/benchmark.py; the ONNX export
        # (fairseq_vqvae/deploy, scripts/export_onnx.py)
        "benchmark": ["ctranslate2==4.8.5", "onnxruntime==1.31.1", "onnx==1.23.2"],
        "test": ["pytest>=7"],
    },
    license="MIT",
)
