"""Export a babelcast-trained model as a `.nemo` that NeMo 3.0.0 restores (spec §1).

babelcast's state-dict keys are NeMo's, one for one, so the work is the config: every `_target_`
and field NeMo needs to build the class, the tokenizer as `nemo:` artifacts, and the vocabulary
lists NeMo would write at init. A config given in NeMo's model_config format is completed from a
3.5-shaped template; keys it already has win.
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any, Mapping

import sentencepiece as spm

from ..audio.io import SAMPLE_RATE_HZ
from ..checkpoint.nemo_archive import NemoArchive, write_nemo
from ..config import parse_model_config
from ..model.asr import AsrModel
from .tokenizer import FILE_NAMES, TokenizerFiles

NEMO_VERSION = "3.0.0"
ASR = "nemo.collections.asr"
TARGETS = {  # (prompt, ctc) → NeMo class
    (True, False): f"{ASR}.models.rnnt_bpe_models_prompt.EncDecRNNTBPEModelWithPrompt",
    (True, True): f"{ASR}.models.hybrid_rnnt_ctc_bpe_models_prompt.EncDecHybridRNNTCTCBPEModelWithPrompt",
    (False, False): f"{ASR}.models.rnnt_bpe_models.EncDecRNNTBPEModel",
    (False, True): f"{ASR}.models.hybrid_rnnt_ctc_bpe_models.EncDecHybridRNNTCTCBPEModel",
}


def _template(d_model: int, pred_hidden: int, joint_hidden: int, n_mels: int) -> dict[str, Any]:
    """NeMo's fields for a cache-aware FastConformer transducer, with 3.5's values (spec §1.2)."""
    return {
        "sample_rate": SAMPLE_RATE_HZ, "compute_eval_loss": False, "log_prediction": True, "skip_nan_grad": True,
        "model_defaults": {"enc_hidden": d_model, "pred_hidden": pred_hidden, "joint_hidden": joint_hidden},
        "preprocessor": {
            "_target_": f"{ASR}.modules.AudioToMelSpectrogramPreprocessor", "sample_rate": SAMPLE_RATE_HZ,
            "normalize": "NA", "window_size": 0.025, "window_stride": 0.01, "window": "hann",
            "features": n_mels, "n_fft": 512, "frame_splicing": 1, "dither": 1.0e-5, "pad_to": 0},
        "spec_augment": {"_target_": f"{ASR}.modules.SpectrogramAugmentation", "freq_masks": 2,
                         "time_masks": 10, "freq_width": 27, "time_width": 0.05},
        "encoder": {
            "_target_": f"{ASR}.modules.ConformerEncoder", "feat_out": -1, "reduction": None,
            "reduction_position": None, "reduction_factor": 1, "att_context_probs": None,
            "untie_biases": True, "pos_emb_max_len": 5000, "dropout": 0.1, "dropout_pre_encoder": 0.1,
            "dropout_emb": 0.0, "dropout_att": 0.1, "stochastic_depth_drop_prob": 0.0,
            "stochastic_depth_mode": "linear", "stochastic_depth_start_layer": 1},
        "decoder": {"_target_": f"{ASR}.modules.RNNTDecoder", "normalization_mode": None,
                    "random_state_sampling": False, "blank_as_pad": True,
                    "prednet": {"t_max": None, "dropout": 0.2}},
        "joint": {"_target_": f"{ASR}.modules.RNNTJoint", "log_softmax": None, "preserve_memory": False,
                  "fuse_loss_wer": True, "fused_batch_size": 2},
        "decoding": {"strategy": "greedy_batch", "greedy": {"max_symbols": 10}},
        "loss": {"loss_name": "default", "warprnnt_numba_kwargs": {"fastemit_lambda": 0.005, "clamp": -1.0}},
    }


def _merge(base: dict, over: Mapping) -> dict:
    """Deep merge: values of `over` win, nested mappings merge."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def artifact_names(tok: TokenizerFiles) -> dict[str, str]:
    """Member names `<32 hex>_<file>` (NeMo's pattern), deterministic in the tokenizer's content."""
    digest = hashlib.sha256(tok.model).hexdigest()[:32]
    return {field: f"{digest}_{name}" for field, name in FILE_NAMES.items()}


def nemo_config(model_section: Mapping[str, Any], tok: TokenizerFiles,
                ctc_weight: float = 0.3) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Complete NeMo model_config (no outer `model:`) and the artifacts it refers to."""
    cfg = parse_model_config(model_section)
    enc, tr = cfg.encoder, cfg.transducer
    out = _merge(_template(enc.d_model, tr.pred_hidden, tr.joint_hidden, enc.feat_in), model_section)
    sp = spm.SentencePieceProcessor(model_proto=tok.model)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    if len(pieces) != tr.vocab_size:
        raise ValueError(f"tokenizer has {len(pieces)} pieces but decoder.vocab_size is {tr.vocab_size}")
    names = artifact_names(tok)
    out["tokenizer"] = {"dir": None, "type": "bpe", "model_path": f"nemo:{names['model']}",
                        "vocab_path": f"nemo:{names['vocab_txt']}", "spe_tokenizer_vocab": f"nemo:{names['vocab']}"}
    out["model_defaults"].update(enc_hidden=enc.d_model, pred_hidden=tr.pred_hidden, joint_hidden=tr.joint_hidden)
    out["encoder"]["feat_in"] = enc.feat_in
    out["decoder"]["vocab_size"] = len(pieces)
    out["joint"].update(num_classes=len(pieces), vocabulary=pieces)
    out["joint"]["jointnet"].update(encoder_hidden=enc.d_model, pred_hidden=tr.pred_hidden)
    out["labels"] = pieces
    if cfg.prompt is not None:
        out["num_prompts"] = cfg.prompt.num_prompts
    if cfg.has_ctc:
        out["aux_ctc"] = _merge({"ctc_loss_weight": ctc_weight, "use_cer": False, "ctc_reduction": "mean_batch",
                                 "decoding": {"strategy": "greedy_batch"}}, out.get("aux_ctc", {}))
        out["aux_ctc"]["decoder"] = {"_target_": f"{ASR}.modules.ConvASRDecoder", "feat_in": enc.d_model,
                                     "num_classes": len(pieces), "vocabulary": pieces}
    out["target"] = TARGETS[(cfg.prompt is not None, cfg.has_ctc)]
    out["nemo_version"] = NEMO_VERSION
    artifacts = {names[field]: getattr(tok, field) for field in FILE_NAMES}
    return out, artifacts


def _weights(model: AsrModel) -> dict:
    """fp32 CPU copies of every tensor NeMo's state dict has (babelcast's keys are NeMo's)."""
    return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}


def export_nemo(path: str | Path, model: AsrModel, model_section: Mapping[str, Any], tok: TokenizerFiles,
                ctc_weight: float = 0.3, with_ctc: bool = True) -> Path:
    """Write `model` as a `.nemo` built from its NeMo-format config section and tokenizer files.
    with_ctc=False leaves a hybrid's CTC head out: a plain (prompt) RNNT checkpoint, the auxiliary
    CTC loss having served training only."""
    weights = _weights(model)
    if not with_ctc:
        model_section = {k: v for k, v in model_section.items() if k != "aux_ctc"}
        weights = {k: v for k, v in weights.items() if not k.startswith("ctc_decoder.")}
    config, artifacts = nemo_config(model_section, tok, ctc_weight)
    return write_nemo(path, config, weights, artifacts)


def export_like(path: str | Path, model: AsrModel, base: NemoArchive) -> Path:
    """Write fine-tuned weights into the base checkpoint's own config and tokenizer artifacts."""
    return write_nemo(path, base.config, _weights(model), base.artifacts)
