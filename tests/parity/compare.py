"""babelcast vs NeMo on the oracle's reference (tests/parity/nemo_oracle.py): shared by the tests
and by `python tests/parity/compare.py` which prints the parity table."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import babelcast
from babelcast import chunking
from babelcast.model.encoder import OPEN_END


@dataclass
class Case:
    model: str
    check: str  # features | encoded | prompted | tokens | ctc_tokens | stream_steps | stream_tokens | stream_ctc_tokens
    where: str  # context / language / clip
    identical: bool  # tokens equal, or tensors within tolerance
    max_diff: float = 0.0


TOL = 1e-3  # absolute, on fp32 tensors of magnitude ~1


def ctx_key(left: int, right: int) -> str:
    return f"{left}_{right}"


def lang_arg(lang: str) -> str | None:
    return None if lang == "none" else lang


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _latency(rec: babelcast.Recognizer, right: int) -> int:
    enc = rec.cfg.encoder
    return chunking.latency_ms(right, enc.subsampling_factor, rec.cfg.features.frame_ms)


def _contexts(ref: dict) -> list[tuple[int, int]]:
    return [tuple(c) for c in ref["contexts"]] + [tuple(c) for c in ref.get("extra_contexts", [])]


def compare_features(name: str, rec: babelcast.Recognizer, ref: dict) -> list[Case]:
    out = []
    for i, clip in enumerate(ref["clips"]):
        mel, _ = rec.model.features(clip[None].float(), torch.tensor([clip.numel()]))
        d = _diff(mel[0], ref["features"][i])
        out.append(Case(name, "features", f"clip{i}", d <= TOL, d))
    return out


def compare_encoder(name: str, rec: babelcast.Recognizer, ref: dict) -> list[Case]:
    """Offline encoder frames (before and after the prompt) from NeMo's own features."""
    out = []
    for left, right in _contexts(ref):
        r = ref["offline"][ctx_key(left, right)]
        for i, mel in enumerate(ref["features"]):
            with torch.no_grad():
                enc, _ = rec.model.encoder(mel[None], torch.tensor([mel.shape[1]]), left, right)
            d = _diff(enc[0], r["encoded"][i])
            out.append(Case(name, "encoded", f"{left}_{right}/clip{i}", d <= TOL, d))
            for lang, prompted in r.get("prompted", {}).items():
                pid = torch.tensor([rec.prompt_id(lang_arg(lang))])
                with torch.no_grad():
                    p = rec.model.apply_prompt(enc, pid)
                d = _diff(p[0], prompted[i])
                out.append(Case(name, "prompted", f"{left}_{right}/{lang}/clip{i}", d <= TOL, d))
    return out


def compare_offline_tokens(name: str, rec: babelcast.Recognizer, ref: dict) -> list[Case]:
    out = []
    clips = [c.numpy() for c in ref["clips"]]
    for left, right in _contexts(ref):
        r = ref["offline"][ctx_key(left, right)]
        for check, decoder in (("tokens", "rnnt"), ("ctc_tokens", "ctc")):
            for lang, expected in r.get(check, {}).items():
                got = rec.transcribe(clips, language=lang_arg(lang), latency_ms=_latency(rec, right),
                                     decoder=decoder, keep_lang_tags=True, batch_size=len(clips))
                for i, (t, e) in enumerate(zip(got, expected)):
                    out.append(Case(name, check, f"{left}_{right}/{lang}/clip{i}", t.tokens == list(e)))
    return out


def _steps(rec: babelcast.Recognizer, mel: torch.Tensor, left: int, right: int) -> list[torch.Tensor]:
    """babelcast's encoder steps over NeMo's features [F, T]: the valid frames of each step."""
    enc = rec.model.encoder
    f = enc.cfg.subsampling_factor
    n = chunking.chunk_mel(right, f)
    buf = torch.cat([torch.zeros(chunking.lead_in_mel(f), mel.shape[0]), mel.T])
    total, done, state, out = mel.shape[1], 0, enc.init_state(1, left), []
    with torch.no_grad():
        while buf.shape[0] >= n or chunking.final_valid_enc(total, done, right, enc.cfg.n_subsampling_stages):
            chunk = buf[:n] if buf.shape[0] >= n else torch.cat([buf, buf.new_zeros(n - buf.shape[0], buf.shape[1])])
            end = OPEN_END if buf.shape[0] > n else total
            step = enc.step(chunk[None], state, left, right, torch.tensor([end]))
            state, buf, done = step.state, buf[n:], done + right + 1
            out.append(step.frames[0, : int(step.valid)])
    return out


# check name, babelcast decoder, the reference's key (hybrids also have CTC streaming references)
STREAM_TOKENS = (("stream_tokens", "rnnt", "tokens"), ("stream_ctc_tokens", "ctc", "ctc_tokens"))


def compare_streaming(name: str, rec: babelcast.Recognizer, ref: dict) -> list[Case]:
    """Per-step encoder frames and final tokens of each head; NeMo streaming where it is right, else NeMo
    offline."""
    out = []
    for left, right in _contexts(ref):
        key = ctx_key(left, right)
        for lang, r in ref["streaming"].get(key, {}).items():
            for i, clip in enumerate(ref["clips"]):
                where = f"{key}/{lang}/clip{i}"
                if r["matches_offline_encoded"][i]:
                    mine = _steps(rec, ref["features"][i], left, right)
                    d = max((_diff(a, b) for a, b in zip(mine, r["steps"][i])), default=0.0)
                    d = d if len(mine) >= len(r["steps"][i]) else float("inf")
                    out.append(Case(name, "stream_steps", where, d <= TOL, d))
                for check, decoder, tokens_key in STREAM_TOKENS:
                    if tokens_key not in r:
                        continue
                    session = rec.stream(lang_arg(lang), _latency(rec, right), keep_lang_tags=True, decoder=decoder)
                    session.accept_audio(clip.numpy())
                    tokens = session.flush().tokens
                    expected = (r[tokens_key][i] if r[f"matches_offline_{tokens_key}"][i]
                                else ref["offline"][key][tokens_key][lang][i])
                    out.append(Case(name, check, where, tokens == list(expected)))
    return out


CHECKS = (compare_features, compare_encoder, compare_offline_tokens, compare_streaming)


def all_cases(reference: dict) -> list[Case]:
    cases = []
    for name, ref in reference["models"].items():
        rec = babelcast.load_model(ref["nemo_path"])
        for check in CHECKS:
            cases += check(name, rec, ref)
    return cases


def summary(cases: list[Case]) -> str:
    """One row per (model, check): cases compared, identical, largest numeric difference."""
    rows: dict[tuple[str, str], list[Case]] = {}
    for c in cases:
        rows.setdefault((c.model, c.check), []).append(c)
    lines = ["| model | check | compared | identical | max abs diff |", "|---|---|---|---|---|"]
    for (model, check), cs in rows.items():
        lines.append(f"| {model} | {check} | {len(cs)} | {sum(c.identical for c in cs)} | "
                     f"{max(c.max_diff for c in cs):.2e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    from pathlib import Path

    ref = torch.load(sys.argv[1], weights_only=False)
    for entry in ref["models"].values():  # the .nemo files sit beside reference.pt
        entry["nemo_path"] = str(Path(sys.argv[1]).parent / Path(entry["nemo_path"]).name)
    print(summary(all_cases(ref)))
