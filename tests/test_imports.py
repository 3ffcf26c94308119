"""The model, tokenizer and top-level imports must not pull in tensorflow-datasets or grain
(the GPU image lacks them), nor the reference frameworks."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["metareason", "metareason.model", "metareason.tokenize", "metareason.cli",
                                    "metareason.sample", "metareason.tasks", "metareason.train",
                                    "metareason.data.manual", "metareason.probe.run", "metareason.inner",
                                    "metareason.studies.compare", "metareason.studies.lab_meta", "metareason.stats",
                                    "metareason.evaluate", "metareason.evaluate.run", "metareason.train.rl",
                                    "metareason.runs", "metareason.demo", "metareason.train.loop"])
def test_import_chain_is_light(module):
    code = (f"import sys, {module}\n"
            "heavy = [m for m in ('tensorflow_datasets', 'grain', 'tensorflow', 'torch', 'transformers', 'tunix') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing {module} imported {out.stdout.strip()}"
