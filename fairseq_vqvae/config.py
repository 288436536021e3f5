"""VQVAENATConfig: every option of the vqvae_nat model, declared once, with its valid range.

Defaults are the paper's base model (Roy et al. 2018, https://arxiv.org/abs/1805.11063,
section 5.1 and tensor2tensor's ``transformer_nat_base``) unless a comment says otherwise.
"""

import ast
import math
from dataclasses import dataclass, field, fields
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from .bottleneck import BOTTLENECKS, INITS
from .checks import check_option_combinations
from .errors import OptionError

BottleneckChoice = ChoiceEnum(list(BOTTLENECKS))
LatentLengthChoice = ChoiceEnum(["predict", "source"])
CodebookInitChoice = ChoiceEnum(list(INITS))
LatentPredictorKindChoice = ChoiceEnum(["autoregressive", "parallel"])


def option(default, help: str, valid: str = ""):
    """The dataclass field of one option: its default, its help (fairseq's ``--help``) and
    its valid range as docs/options.md shows it, which ``validate`` checks: ``">= 1"``,
    ``"[0.0, 1.0)"``, ``"[0.0, 1.0]"``, ``"> 0"`` (finite) or ``"unset or [0.0, 1.0)"``."""
    return field(default=default, metadata={"help": help, "valid": valid})


def _range(valid: str):
    """(low, high, high_inclusive) of a range text of ``option`` (not ``"> 0"``)."""
    valid = valid.removeprefix("unset or ")
    if valid.startswith(">= "):
        return ast.literal_eval(valid[3:]), None, False
    low, high = ast.literal_eval(valid[1:-1])
    return low, high, valid.endswith("]")


@dataclass
class VQVAENATConfig(FairseqDataclass):
    # Transformer stacks (fairseq layers).
    encoder_embed_dim: int = option(
        512, "model dimension d of every stack; paper: 512", ">= 1"
    )
    encoder_ffn_embed_dim: int = option(
        4096,
        "FFN inner dimension of the source encoder; paper (t2t filter_size): 4096",
        ">= 1",
    )
    encoder_layers: int = option(6, "source encoder layers; paper: 6", ">= 1")
    encoder_attention_heads: int = option(
        4,
        "attention heads in every stack; paper (t2t transformer_small heritage): 4",
        ">= 1",
    )
    decoder_ffn_embed_dim: int = option(
        4096,
        "FFN inner dimension of the token decoder and latent predictor; paper: 4096",
        ">= 1",
    )
    decoder_layers: int = option(
        6, "token decoder layers (one parallel pass); paper: 6", ">= 1"
    )
    latent_layers: int = option(
        6, "latent predictor layers (autoregressive over codes); paper: 6", ">= 1"
    )
    ae_layers: int = option(
        0,
        "Transformer layers attending to the source before compressing the target; 0 = the paper's autoencoder, which does not see the source",
        ">= 0",
    )
    post_norm: bool = option(
        False,
        "post-norm layers, as fairseq's transformer (needed to --init-from-ar one); default: pre-norm (t2t)",
    )
    init_from_ar: str = option(
        "",
        "warm start (beyond the paper): when fairseq-train builds the model, copy the source encoder, the embeddings and the token decoder's layers of this fairseq transformer checkpoint (e.g. the distillation teacher); its dictionary, dimensions and layer-norm placement must match (fairseq's transformer is post-norm: add --post-norm). A resumed or loaded checkpoint's own weights replace them",
    )
    dropout: float = option(
        0.1, "dropout in [0, 1) on residuals and embeddings; paper: 0.1", "[0.0, 1.0)"
    )
    attention_dropout: float = option(
        0.1, "dropout on attention weights; paper: 0.1", "[0.0, 1.0)"
    )
    activation_dropout: float = option(
        0.1,
        "dropout after the FFN activation; paper (t2t relu_dropout): 0.1",
        "[0.0, 1.0)",
    )
    latent_predictor_dropout: Optional[float] = option(
        None,
        "dropout in [0, 1) on the latent predictor's residuals and code embeddings (beyond the paper: a converged predictor overfits its training codes); default: --dropout",
        "unset or [0.0, 1.0)",
    )
    share_all_embeddings: bool = option(
        False,
        "share source, target and output embeddings; needs fairseq-preprocess --joined-dictionary (paper: shared 32k vocabulary)",
    )
    max_source_positions: int = II("task.max_source_positions")
    max_target_positions: int = II("task.max_target_positions")
    # The latent sequence.
    compress_steps: int = option(
        3,
        "n_c: the target is compressed 2^n_c times into latent codes (3 = 8x, 4 = 16x); 0 = one code per target token, from its embedding alone unless --ae-layers (latent-GLAT's word codes; beyond the paper); paper Table 1: 3; must satisfy 2^n_c <= --max-target-positions",
        ">= 0",
    )
    latent_length: LatentLengthChoice = option(
        "predict",
        "how many latents to decode at inference: 'predict' = a length classifier predicts the target length T and ceil(T / 2^n_c) latents are decoded; 'source' = the paper's fixed ceil(length_ratio * |x| / 2^n_c)",
    )
    length_ratio: float = option(
        2.0,
        "latent_length=source only: decoded target length is length_ratio * source length; paper: 2",
        "> 0",
    )
    length_loss_factor: float = option(
        0.1,
        "latent_length=predict only: weight of the length classifier's loss; fairseq NAT default 0.1",
        ">= 0.0",
    )
    # The bottleneck (fairseq_vqvae.bottleneck.BottleneckConfig).
    bottleneck: BottleneckChoice = option(
        "soft_em",
        "vqvae = straight-through with a gradient-trained codebook; hard_em = EMA K-means; soft_em = Monte-Carlo EM (paper's best)",
    )
    codebook_size: int = option(4096, "K codes per slice; paper: 2^12", ">= 1")
    code_dim: int = option(
        0,
        "dimension of the quantized vectors; 0 = the model dimension (paper), else a projection in and out",
        ">= 0",
    )
    num_slices: int = option(
        1,
        "n_d slices of decomposed VQ (Kaiser et al. 2018), each with its own K codes; 1 = plain VQ (paper)",
        ">= 1",
    )
    codebook_decay: float = option(
        0.999,
        "EMA decay in [0, 1) of hard_em/soft_em codebooks; paper: 0.999",
        "[0.0, 1.0)",
    )
    codebook_epsilon: float = option(
        1e-5, "Laplace smoothing of EMA counts; t2t: 1e-5", "> 0"
    )
    commitment_weight: float = option(
        0.25, "beta of the commitment loss; paper: 0.25", ">= 0.0"
    )
    num_samples: int = option(
        10,
        "soft_em only: m Monte-Carlo samples per latent; paper: 10 with distillation, 5 without",
        ">= 1",
    )
    soft_em_temperature: float = option(
        1.0, "soft_em only: temperature of softmax(-||z - e||^2 / T); paper: 1", "> 0"
    )
    dead_code_threshold: float = option(
        0.0,
        "EM variants: restart codes used less than this many times per update (bias-corrected EMA) from current latents; 0 = off (paper)",
        ">= 0.0",
    )
    restart_grace_updates: int = option(
        0,
        "EM variants with --dead-code-threshold: updates after its restart in which a code is not restarted again (beyond the paper): a restarted code starts at the threshold and, unless used at once, falls below it at the next M-step; 0 = no grace period (every code below the threshold is drawn again at every update)",
        ">= 0",
    )
    codebook_init: CodebookInitChoice = option(
        "uniform",
        "how the codes start: uniform = U(+-sqrt(3/K)) (paper's code); data = K latents of the first update, drawn at random (beyond the paper; common VQ practice): the first update sets the codes instead of an M-step",
    )
    # Schedules, in optimizer updates.
    bottleneck_warmup_updates: int = option(
        0,
        "per-example probability of using quantized (not continuous) latents rises from 0.01 to 1 over this many updates; 0 = quantize from the start; paper: 10000",
        ">= 0",
    )
    latent_loss_start_update: int = option(
        0,
        "the latent predictor's loss is off before this update; paper: 50000 (needed there because its gradient reached the autoencoder; here it does not)",
        ">= 0",
    )
    latent_loss_factor: float = option(
        1.0, "weight of the latent predictor's cross-entropy; paper: 1", ">= 0.0"
    )
    # The latent predictor's training (beyond the paper).
    latent_predictor_kind: LatentPredictorKindChoice = option(
        "autoregressive",
        "how the latent predictor reads its codes: autoregressive = causal, each latent from the codes before it, greedy or beam search (the paper); parallel = every latent in one pass from a learned mask embedding at every position (latent-GLAT, Bao et al. 2022, beyond the paper): arg-max per position, --gen-latent-samples draws each position independently, no --gen-latent-beam, no --latent-self-inputs",
    )
    latent_glance_ratio: float = option(
        0.0,
        "glancing over codes in [0, 1] (latent-GLAT), --latent-predictor-kind parallel only: in training, ratio x (latents a first, gradient-free pass gets wrong in any slice), rounded down, random latents of each sentence read their gold code instead of the mask and drop out of the latent loss (as latent-GLAT); constant, no annealing; 0 = off; latent-GLAT: 0.5 annealed to 0.3",
        "[0.0, 1.0]",
    )
    latent_clean_targets: bool = option(
        False,
        "teach the latent predictor the codes evaluation gives: its inputs and targets come from a gradient-free pass of the compressor and bottleneck in evaluation mode (no dropout, nearest codes, no soft-EM sampling), while the decoder keeps the training-mode latents; default: the training-mode codes (the paper)",
    )
    latent_length_condition: bool = option(
        False,
        "tell the latent predictor the target length (the reference's in training, the length classifier's at inference): at every step its input adds embeddings of the latents still to come and of how many tokens the last latent holds; needs --latent-length predict",
    )
    latent_tied_codes: bool = option(
        False,
        "give the latent predictor the codebook's geometry: its inputs are the code vectors (projected), its logits minus the squared distances of a predicted vector to every code (times a learned scale, plus a per-code bias), so that a near miss is a near code; no gradient into the codes; default: free input and output tables (the paper)",
    )
    latent_self_inputs: float = option(
        0.0,
        "scheduled sampling for the latent predictor in [0, 1] (beyond the paper): in training each latent's input code is, with this probability, the predictor's own best code from a first teacher-forced pass without gradient, as at inference it reads its own mistakes; 0 = teacher forcing (the paper)",
        "[0.0, 1.0]",
    )
    latent_encoder_grad: float = option(
        1.0,
        "scale in [0, 1] of the latent predictor's gradient into the shared source encoder: 1 = full (the paper), 0 = none (the encoder learns from the word and length losses only)",
        "[0.0, 1.0]",
    )
    latent_label_smoothing: float = option(
        0.0,
        "label smoothing in [0, 1) on the latent predictor's targets (hard and soft); 0 = none (the paper)",
        "[0.0, 1.0)",
    )
    # Decoder curriculum (beyond the paper).
    glance_ratio: float = option(
        0.0,
        "glancing (GLAT, Qian et al. 2021) in [0, 1]: in training, ratio x (wrong tokens of a first, gradient-free decoder pass) random target positions get the reference token's embedding as decoder input and drop out of the loss; 0 = off (paper); GLAT: 0.5 annealed to 0.3",
        "[0.0, 1.0]",
    )
    glance_ratio_end: float = option(
        0.3,
        "glancing ratio in [0, 1] reached after --glance-anneal-updates; GLAT: 0.3",
        "[0.0, 1.0]",
    )
    glance_anneal_updates: int = option(
        0,
        "updates over which the glancing ratio goes linearly from --glance-ratio to --glance-ratio-end; 0 = constant --glance-ratio",
        ">= 0",
    )
    predicted_latent_ratio: float = option(
        0.0,
        "scheduled sampling of codes (CNAT, latent-GLAT: 0.5) in [0, 1]: in training, each latent position feeds the decoder, with this probability, the latent predictor's teacher-forced best code instead of the target's (with --token-decoder-only: its greedy codes, as at inference), so that the decoder learns to read predicted codes; 0 = off (paper)",
        "[0.0, 1.0]",
    )
    prior_commitment_weight: float = option(
        0.0,
        "codes shaped for the latent predictor (beyond the paper) >= 0: in training, add this times mean ||z - sum_k p_k e_k||^2 / D, a commitment of each latent z to the code vector the predictor expects (p: its teacher-forced softmax, no gradient to it or to the codes), so that the codes drift towards what the source can predict; 0 = off (paper)",
        ">= 0.0",
    )
    # Training stages (beyond the paper).
    latent_predictor_only: bool = option(
        False,
        "a second training stage (beyond the paper; the two-stage recipe of van den Oord et al.'s VQ-VAE): train only the latent predictor on the codes of a frozen model (load it with --finetune-from-model): no dropout outside the predictor, no codebook update, so its targets are the nearest codes and stop moving; the word loss is measured, not trained",
    )
    token_decoder_only: bool = option(
        False,
        "a training stage after the others (beyond the paper): train only the token decoder (decompressor and decoder layers) of a frozen model (load it with --finetune-from-model), on the nearest codes or, with --predicted-latent-ratio, on the latent predictor's greedy codes as at inference; the encoder, embeddings, compressor, codebook, latent predictor and length classifier stay as loaded (evaluation mode, no codebook update)",
    )


# The ranges of the options, from their declarations (``option``): (low, high, high_inclusive),
# low inclusive, None unbounded. validate() checks them all once, when the model is built.
_VALID = {f.name: f.metadata.get("valid", "") for f in fields(VQVAENATConfig)}
RANGES = {name: _range(v) for name, v in _VALID.items() if v and v != "> 0"}
UNSET_ALLOWED = tuple(name for name, v in _VALID.items() if v.startswith("unset or"))
POSITIVE = tuple(name for name, v in _VALID.items() if v == "> 0")  # finite, > 0


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
    check_option_combinations(cfg)
