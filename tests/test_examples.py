"""Every script in examples/ runs, in its reduced setting (SCAUG_EXAMPLES_QUICK=1: tiny models).

The scripts run in this process (``runpy``), in a temporary folder, so they share the imports
of the test session; what they print and write is checked, not the scores (tiny models).
"""

import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: example -> (what its output must contain, files it writes)
EXPECTED = {
    "xgboost_pipeline.py": (["no augmentation", "SCLDOverSampler", "macro-F1"], []),
    "augment_anndata.py": (["generated:", "dropped"], ["real_vs_synthetic.png",
                                                        "pbmc_augmented.h5ad"]),
    "pretrained_encoder.py": (["pretrained the encoder", "macro-F1 per fold"],
                              ["pbmc_encoder.scae"]),
    "pretrained_encoder_other_genes.py": (["gene overlap", "in the target's order: True",
                                           "rare-type F1"],
                                          ["encoder_all_genes.scae", "encoder_pbmc68k.scae"]),
    "unlabelled_cells.py": (["unlabelled", "synthetic Dendritic cells"], []),
    "guidance_ablation.py": (["conditional (default)", "all three", "screening accepted"], []),
    "rare_cells_pbmc.py": (["synthetic", "precision"], []),
}


def test_every_example_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.filterwarnings("ignore:Screening accepted:UserWarning")  # tiny models
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name, tmp_path, monkeypatch, capsys):
    if name in ("xgboost_pipeline.py",):
        pytest.importorskip("xgboost")
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("SCAUG_EXAMPLES_QUICK", "1")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    out = capsys.readouterr().out
    texts, files = EXPECTED[name]
    for text in texts:
        assert text in out, out
    for file in files:
        assert (tmp_path / file).stat().st_size > 0
