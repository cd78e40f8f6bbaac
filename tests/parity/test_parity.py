"""babelcast == NeMo 3.0.0, token for token in fp32, on NeMo-built random checkpoints."""
import pytest

import babelcast

from compare import CHECKS, summary

MODELS = ["prompt_rnnt", "rnnt", "hybrid"]


@pytest.fixture(scope="module")
def recognizers(nemo_reference):
    return {name: babelcast.load_model(ref["nemo_path"]) for name, ref in nemo_reference["models"].items()}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
def test_parity(nemo_reference, recognizers, model, check):
    cases = check(model, recognizers[model], nemo_reference["models"][model])
    assert cases, f"nothing compared for {model}/{check.__name__}"
    bad = [c for c in cases if not c.identical]
    assert not bad, summary(cases) + "\nfirst mismatches: " + "; ".join(
        f"{c.where} ({c.max_diff:.2e})" for c in bad[:8])
