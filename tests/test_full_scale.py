"""experiments/full_scale.py: every command parses into its config, the architectures are the
published ones (parameter counts of the released checkpoints), and the memory table's
per-device params are the count split by the mesh."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import full_scale  # noqa: E402


def test_commands_parse_and_architectures_are_the_published_ones():
    runs = full_scale.runs()
    full_scale.check_commands(runs)
    assert {r.experiments.split(" ")[0].rstrip(",") for r in runs} >= {"E6", "E7", "E10", "E11", "E2"}
    # the released checkpoints' parameter counts (safetensors totals on the Hugging Face hub)
    counts = {"Qwen2.5-7B": 7_615_616_512, "QwQ-32B": 32_763_876_352, "Qwen3-32B": 32_762_123_264}
    for name, n in counts.items():
        assert full_scale.MODELS[name].num_params() == n, name


def test_memory_table_splits_the_params_over_the_mesh():
    run = next(r for r in full_scale.runs() if r.name == "e6-sft-long")
    est = full_scale.estimate(run)
    assert run.mesh_sizes() == {"data": 1, "fsdp": 64, "tensor": 1}
    # float32 master weights over 64 FSDP shards; what has no "embed" dimension stays whole: the
    # norm scales (2 per layer + the final one) and the q / k / v biases (28 + 2 x 4 heads of 128)
    whole = (28 * 2 + 1) * 3584 + 28 * (28 + 2 * 4) * 128
    split = 7_615_616_512 - whole
    assert est.params == split * 4 // 64 + whole * 4
    assert est.optimizer == 2 * est.params  # AdamW's two moments, in the params' dtype
    assert "e6-sft-long" in full_scale.table([run])
