"""VQVAENATConfig: every option of the vqvae_nat model, declared once.

Defaults are the paper's base model (Roy et al. 2018, https://arxiv.org/abs/1805.11063,
section 5.1 and tensor2tensor's ``transformer_nat_base``) unless a comment says otherwise.
"""

import math
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from .bottleneck import BOTTLENECKS, INITS
from .errors import OptionError

BottleneckChoice = ChoiceEnum(list(BOTTLENECKS))
LatentLengthChoice = ChoiceEnum(["predict", "source"])
CodebookInitChoice = ChoiceEnum(list(INITS))


@dataclass
class VQVAENATConfig(FairseqDataclass):
    # Transformer stacks (fairseq layers).
    encoder_embed_dim: int = field(
        default=512, metadata={"help": "model dimension d of every stack; paper: 512"}
    )
    encoder_ffn_embed_dim: int = field(
        default=4096,
        metadata={
            "help": "FFN inner dimension of the source encoder; paper (t2t filter_size): 4096"
        },
    )
    encoder_layers: int = field(
        default=6, metadata={"help": "source encoder layers; paper: 6"}
    )
    encoder_attention_heads: int = field(
        default=4,
        metadata={
            "help": "attention heads in every stack; paper (t2t transformer_small heritage): 4"
        },
    )
    decoder_ffn_embed_dim: int = field(
        default=4096,
        metadata={
            "help": "FFN inner dimension of the token decoder and latent predictor; paper: 4096"
        },
    )
    decoder_layers: int = field(
        default=6,
        metadata={"help": "token decoder layers (one parallel pass); paper: 6"},
    )
    latent_layers: int = field(
        default=6,
        metadata={
            "help": "latent predictor layers (autoregressive over codes); paper: 6"
        },
    )
    ae_layers: int = field(
        default=0,
        metadata={
            "help": "Transformer layers attending to the source before compressing the target; 0 = the paper's autoencoder, which does not see the source"
        },
    )
    post_norm: bool = field(
        default=False,
        metadata={
            "help": "post-norm layers, as fairseq's transformer (needed to --init-from-ar one); default: pre-norm (t2t)"
        },
    )
    init_from_ar: str = field(
        default="",
        metadata={
            "help": "warm start (beyond the paper): when fairseq-train builds the model, copy the source encoder, the embeddings and the token decoder's layers of this fairseq transformer checkpoint (e.g. the distillation teacher); its dictionary, dimensions and layer-norm placement must match (fairseq's transformer is post-norm: add --post-norm). A resumed or loaded checkpoint's own weights replace them"
        },
    )
    dropout: float = field(
        default=0.1,
        metadata={"help": "dropout in [0, 1) on residuals and embeddings; paper: 0.1"},
    )
    attention_dropout: float = field(
        default=0.1, metadata={"help": "dropout on attention weights; paper: 0.1"}
    )
    activation_dropout: float = field(
        default=0.1,
        metadata={
            "help": "dropout after the FFN activation; paper (t2t relu_dropout): 0.1"
        },
    )
    latent_predictor_dropout: Optional[float] = field(
        default=None,
        metadata={
            "help": "dropout in [0, 1) on the latent predictor's residuals and code embeddings (beyond the paper: a converged predictor overfits its training codes); default: --dropout"
        },
    )
    share_all_embeddings: bool = field(
        default=False,
        metadata={
            "help": "share source, target and output embeddings; needs fairseq-preprocess --joined-dictionary (paper: shared 32k vocabulary)"
        },
    )
    max_source_positions: int = II("task.max_source_positions")
    max_target_positions: int = II("task.max_target_positions")
    # The latent sequence.
    compress_steps: int = field(
        default=3,
        metadata={
            "help": "n_c: the target is compressed 2^n_c times into latent codes (3 = 8x, 4 = 16x); paper Table 1: 3; must satisfy 2^n_c <= --max-target-positions"
        },
    )
    latent_length: LatentLengthChoice = field(
        default="predict",
        metadata={
            "help": "how many latents to decode at inference: 'predict' = a length classifier predicts the target length T and ceil(T / 2^n_c) latents are decoded; 'source' = the paper's fixed ceil(length_ratio * |x| / 2^n_c)"
        },
    )
    length_ratio: float = field(
        default=2.0,
        metadata={
            "help": "latent_length=source only: decoded target length is length_ratio * source length; paper: 2"
        },
    )
    length_loss_factor: float = field(
        default=0.1,
        metadata={
            "help": "latent_length=predict only: weight of the length classifier's loss; fairseq NAT default 0.1"
        },
    )
    # The bottleneck (fairseq_vqvae.bottleneck.BottleneckConfig).
    bottleneck: BottleneckChoice = field(
        default="soft_em",
        metadata={
            "help": "vqvae = straight-through with a gradient-trained codebook; hard_em = EMA K-means; soft_em = Monte-Carlo EM (paper's best)"
        },
    )
    codebook_size: int = field(
        default=4096, metadata={"help": "K codes per slice; paper: 2^12"}
    )
    code_dim: int = field(
        default=0,
        metadata={
            "help": "dimension of the quantized vectors; 0 = the model dimension (paper), else a projection in and out"
        },
    )
    num_slices: int = field(
        default=1,
        metadata={
            "help": "n_d slices of decomposed VQ (Kaiser et al. 2018), each with its own K codes; 1 = plain VQ (paper)"
        },
    )
    codebook_decay: float = field(
        default=0.999,
        metadata={
            "help": "EMA decay in [0, 1) of hard_em/soft_em codebooks; paper: 0.999"
        },
    )
    codebook_epsilon: float = field(
        default=1e-5, metadata={"help": "Laplace smoothing of EMA counts; t2t: 1e-5"}
    )
    commitment_weight: float = field(
        default=0.25, metadata={"help": "beta of the commitment loss; paper: 0.25"}
    )
    num_samples: int = field(
        default=10,
        metadata={
            "help": "soft_em only: m Monte-Carlo samples per latent; paper: 10 with distillation, 5 without"
        },
    )
    soft_em_temperature: float = field(
        default=1.0,
        metadata={
            "help": "soft_em only: temperature of softmax(-||z - e||^2 / T); paper: 1"
        },
    )
    dead_code_threshold: float = field(
        default=0.0,
        metadata={
            "help": "EM variants: restart codes used less than this many times per update (bias-corrected EMA) from current latents; 0 = off (paper)"
        },
    )
    restart_grace_updates: int = field(
        default=0,
        metadata={
            "help": "EM variants with --dead-code-threshold: updates after its restart in which a code is not restarted again (beyond the paper): a restarted code starts at the threshold and, unless used at once, falls below it at the next M-step; 0 = no grace period (every code below the threshold is drawn again at every update)"
        },
    )
    codebook_init: CodebookInitChoice = field(
        default="uniform",
        metadata={
            "help": "how the codes start: uniform = U(+-sqrt(3/K)) (paper's code); data = K latents of the first update, drawn at random (beyond the paper; common VQ practice): the first update sets the codes instead of an M-step"
        },
    )
    # Schedules, in optimizer updates.
    bottleneck_warmup_updates: int = field(
        default=0,
        metadata={
            "help": "per-example probability of using quantized (not continuous) latents rises from 0.01 to 1 over this many updates; 0 = quantize from the start; paper: 10000"
        },
    )
    latent_loss_start_update: int = field(
        default=0,
        metadata={
            "help": "the latent predictor's loss is off before this update; paper: 50000 (needed there because its gradient reached the autoencoder; here it does not)"
        },
    )
    latent_loss_factor: float = field(
        default=1.0,
        metadata={"help": "weight of the latent predictor's cross-entropy; paper: 1"},
    )
    # The latent predictor's training (beyond the paper).
    latent_clean_targets: bool = field(
        default=False,
        metadata={
            "help": "teach the latent predictor the codes evaluation gives: its inputs and targets come from a gradient-free pass of the compressor and bottleneck in evaluation mode (no dropout, nearest codes, no soft-EM sampling), while the decoder keeps the training-mode latents; default: the training-mode codes (the paper)"
        },
    )
    latent_length_condition: bool = field(
        default=False,
        metadata={
            "help": "tell the latent predictor the target length (the reference's in training, the length classifier's at inference): at every step its input adds embeddings of the latents still to come and of how many tokens the last latent holds; needs --latent-length predict"
        },
    )
    latent_tied_codes: bool = field(
        default=False,
        metadata={
            "help": "give the latent predictor the codebook's geometry: its inputs are the code vectors (projected), its logits minus the squared distances of a predicted vector to every code (times a learned scale, plus a per-code bias), so that a near miss is a near code; no gradient into the codes; default: free input and output tables (the paper)"
        },
    )
    latent_self_inputs: float = field(
        default=0.0,
        metadata={
            "help": "scheduled sampling for the latent predictor in [0, 1] (beyond the paper): in training each latent's input code is, with this probability, the predictor's own best code from a first teacher-forced pass without gradient, as at inference it reads its own mistakes; 0 = teacher forcing (the paper)"
        },
    )
    latent_encoder_grad: float = field(
        default=1.0,
        metadata={
            "help": "scale in [0, 1] of the latent predictor's gradient into the shared source encoder: 1 = full (the paper), 0 = none (the encoder learns from the word and length losses only)"
        },
    )
    latent_label_smoothing: float = field(
        default=0.0,
        metadata={
            "help": "label smoothing in [0, 1) on the latent predictor's targets (hard and soft); 0 = none (the paper)"
        },
    )
    # Decoder curriculum (beyond the paper).
    glance_ratio: float = field(
        default=0.0,
        metadata={
            "help": "glancing (GLAT, Qian et al. 2021) in [0, 1]: in training, ratio x (wrong tokens of a first, gradient-free decoder pass) random target positions get the reference token's embedding as decoder input and drop out of the loss; 0 = off (paper); GLAT: 0.5 annealed to 0.3"
        },
    )
    glance_ratio_end: float = field(
        default=0.3,
        metadata={
            "help": "glancing ratio in [0, 1] reached after --glance-anneal-updates; GLAT: 0.3"
        },
    )
    glance_anneal_updates: int = field(
        default=0,
        metadata={
            "help": "updates over which the glancing ratio goes linearly from --glance-ratio to --glance-ratio-end; 0 = constant --glance-ratio"
        },
    )
    predicted_latent_ratio: float = field(
        default=0.0,
        metadata={
            "help": "scheduled sampling of codes (CNAT, latent-GLAT: 0.5) in [0, 1]: in training, each latent position feeds the decoder, with this probability, the latent predictor's teacher-forced best code instead of the target's (with --token-decoder-only: its greedy codes, as at inference), so that the decoder learns to read predicted codes; 0 = off (paper)"
        },
    )

    prior_commitment_weight: float = field(
        default=0.0,
        metadata={
            "help": "codes shaped for the latent predictor (beyond the paper) >= 0: in training, add this times mean ||z - sum_k p_k e_k||^2 / D, a commitment of each latent z to the code vector the predictor expects (p: its teacher-forced softmax, no gradient to it or to the codes), so that the codes drift towards what the source can predict; 0 = off (paper)"
        },
    )

    # Training stages (beyond the paper).
    latent_predictor_only: bool = field(
        default=False,
        metadata={
            "help": "a second training stage (beyond the paper; the two-stage recipe of van den Oord et al.'s VQ-VAE): train only the latent predictor on the codes of a frozen model (load it with --finetune-from-model): no dropout outside the predictor, no codebook update, so its targets are the nearest codes and stop moving; the word loss is measured, not trained"
        },
    )
    token_decoder_only: bool = field(
        default=False,
        metadata={
            "help": "a training stage after the others (beyond the paper): train only the token decoder (decompressor and decoder layers) of a frozen model (load it with --finetune-from-model), on the nearest codes or, with --predicted-latent-ratio, on the latent predictor's greedy codes as at inference; the encoder, embeddings, compressor, codebook, latent predictor and length classifier stay as loaded (evaluation mode, no codebook update)"
        },
    )


# Valid range of every numeric option: (low, high, high_inclusive); low is inclusive, None is
# unbounded. validate() checks them all once, when the model is built.
RANGES = {
    "encoder_embed_dim": (1, None, False),
    "encoder_ffn_embed_dim": (1, None, False),
    "encoder_layers": (1, None, False),
    "encoder_attention_heads": (1, None, False),
    "decoder_ffn_embed_dim": (1, None, False),
    "decoder_layers": (1, None, False),
    "latent_layers": (1, None, False),
    "ae_layers": (0, None, False),
    "dropout": (0.0, 1.0, False),
    "attention_dropout": (0.0, 1.0, False),
    "activation_dropout": (0.0, 1.0, False),
    "compress_steps": (1, None, False),
    "length_loss_factor": (0.0, None, False),
    "codebook_size": (1, None, False),
    "code_dim": (0, None, False),
    "num_slices": (1, None, False),
    "codebook_decay": (0.0, 1.0, False),
    "commitment_weight": (0.0, None, False),
    "num_samples": (1, None, False),
    "dead_code_threshold": (0.0, None, False),
    "restart_grace_updates": (0, None, False),
    "bottleneck_warmup_updates": (0, None, False),
    "latent_loss_start_update": (0, None, False),
    "latent_loss_factor": (0.0, None, False),
    "glance_ratio": (0.0, 1.0, True),
    "glance_ratio_end": (0.0, 1.0, True),
    "glance_anneal_updates": (0, None, False),
    "predicted_latent_ratio": (0.0, 1.0, True),
    "prior_commitment_weight": (0.0, None, False),
    "latent_predictor_dropout": (0.0, 1.0, False),
    "latent_encoder_grad": (0.0, 1.0, True),
    "latent_self_inputs": (0.0, 1.0, True),
    "latent_label_smoothing": (0.0, 1.0, False),
}
UNSET_ALLOWED = ("latent_predictor_dropout",)  # None: falls back to another option
POSITIVE = ("length_ratio", "codebook_epsilon", "soft_em_temperature")  # > 0


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(cfg) -> None:
    """Raise OptionError naming the first option outside its range (nan and inf included),
    and what it must be."""
    for name, (low, high, high_inclusive) in RANGES.items():
        value = getattr(cfg, name)
        if value is None and name in UNSET_ALLOWED:
            continue
        if not math.isfinite(value):
            raise OptionError(f"{_flag(name)} must be a finite number, got {value}")
        if high is None:
            if value < low:
                raise OptionError(f"{_flag(name)} must be >= {low}, got {value}")
        elif not (low <= value <= high if high_inclusive else low <= value < high):
            bracket = "]" if high_inclusive else ")"
            raise OptionError(
                f"{_flag(name)} must be in [{low}, {high}{bracket}, got {value}"
            )
    for name in POSITIVE:
        if not 0 < getattr(cfg, name) < math.inf:
            raise OptionError(
                f"{_flag(name)} must be a finite number > 0, got {getattr(cfg, name)}"
            )
    if cfg.encoder_embed_dim % cfg.encoder_attention_heads:
        raise OptionError(
            f"--encoder-embed-dim ({cfg.encoder_embed_dim}) must be divisible by "
            f"--encoder-attention-heads ({cfg.encoder_attention_heads})"
        )
    ratio = 2**cfg.compress_steps
    if ratio > cfg.max_target_positions:
        raise OptionError(
            f"--compress-steps {cfg.compress_steps} compresses 2^{cfg.compress_steps} = {ratio} "
            f"tokens into one latent, more than --max-target-positions {cfg.max_target_positions}; "
            f"lower --compress-steps or raise --max-target-positions"
        )
    code_dim = cfg.code_dim or cfg.encoder_embed_dim
    if code_dim % cfg.num_slices:
        raise OptionError(
            f"--code-dim ({code_dim}) must be divisible by --num-slices ({cfg.num_slices})"
        )
    if cfg.latent_length_condition and cfg.latent_length != "predict":
        raise OptionError(
            "--latent-length-condition tells the latent predictor the length the length "
            "classifier predicts: it needs --latent-length predict, not "
            f"--latent-length {cfg.latent_length}"
        )
    if cfg.latent_predictor_only and cfg.token_decoder_only:
        raise OptionError(
            "--latent-predictor-only and --token-decoder-only are two separate stages: pass "
            "one (train the predictor first, then the token decoder from its checkpoint)"
        )


# The parts each single-part training stage trains (model attribute names, as parameter-name
# prefixes); everything else is loaded and frozen, the codebook included.
STAGE_PARTS = {
    "latent_predictor_only": ("latent_predictor.",),
    "token_decoder_only": ("decompressor.", "decoder_layers.", "decoder_norm."),
}


def trained_parts(cfg) -> tuple[str, ...] | None:
    """Parameter-name prefixes of what this stage trains; None: everything (joint training)."""
    for option, parts in STAGE_PARTS.items():
        if getattr(cfg, option, False):
            return parts
    return None


def frozen_codebook(cfg) -> bool:
    """A stage that trains one part of a loaded model: its codebook must not move."""
    return trained_parts(cfg) is not None
