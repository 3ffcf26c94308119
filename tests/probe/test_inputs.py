"""Probe inputs from text: examples of a Format, cut rules, batching."""

import numpy as np
import pytest

from metareason.format import FormatError, LabFormat
from metareason.probe import ProbeError
from metareason.probe.inputs import examples_from_records, make_batch, probe_examples, trajectory_cuts
from metareason.tokenize.lab import LAB_VOCAB

TRAJ = "step 1 : 3 + 4 = 7 ; Wait , 3 + 4 = 7 ; Therefore answer is 7"


def test_lab_example_layout():
    e = LabFormat().probe_example("compute 3 + 4 ?", TRAJ, "7", delimiter=True)
    assert LAB_VOCAB.decode(e.prompt) == "<bos> compute 3 + 4 ? <think>"
    assert LAB_VOCAB.decode(e.probe) == "</think> **Final Answer** \\boxed{ 7 }"
    assert [LAB_VOCAB.tokens[t] for t, m in zip(e.probe, e.targets) if m] == ["7"]
    assert e.types[e.trajectory.tolist().index(LAB_VOCAB.ids["Wait"])] == "reflection"
    assert len(e.types) == len(e.trajectory)


def test_cut_rules():
    fmt = LabFormat()
    e = fmt.probe_example("compute 3 + 4 ?", TRAJ, "7")
    T = len(e.trajectory)
    np.testing.assert_array_equal(trajectory_cuts(e), np.arange(T + 1))
    assert trajectory_cuts(e, every=5).tolist() == sorted(set(list(range(0, T + 1, 5)) + [T]))
    semis = [i + 1 for i, t in enumerate(e.trajectory) if LAB_VOCAB.tokens[t] == ";"]
    assert trajectory_cuts(e, "step", fmt=fmt).tolist() == [0, *semis, T]
    assert trajectory_cuts(e, "given", positions=[3, 1, 3]).tolist() == [1, 3]
    with pytest.raises(ProbeError, match="out of range"):
        trajectory_cuts(e, "given", positions=[T + 1])
    with pytest.raises(ProbeError, match="unknown cut rule"):
        trajectory_cuts(e, "words")


def test_empty_answer_is_an_error():
    with pytest.raises(FormatError, match="tokenizes to nothing"):
        LabFormat().probe_example("compute 3 + 4 ?", TRAJ, " ")


def test_probe_examples_equals_per_prefix():
    from metareason.model import init
    from metareason.probe import answer_loss_per_prefix
    from metareason.train.presets import model_preset
    import jax

    config = model_preset("lab-tiny")
    params = init(config, jax.random.key(0))
    recs = [dict(id="a", question="compute 3 + 4 ?", answer="7", trajectory=TRAJ, family="arith"),
            dict(id="b", question="compute 12 - 5 ?", answer="7", trajectory="step 1 : 12 - 5 = 7 ; Therefore answer is 7")]
    exs = examples_from_records(LabFormat(), recs)
    cuts = [trajectory_cuts(e) for e in exs]
    curves = probe_examples(params, config, exs, cuts, batch_size=1)
    ref = answer_loss_per_prefix(params, make_batch(exs, cuts), config=config)
    for i, c in enumerate(curves):
        assert c["id"] == recs[i]["id"] and c["k"] == cuts[i].tolist()
        np.testing.assert_allclose(c["loss"], np.asarray(ref.mean)[i, :len(cuts[i])], rtol=1e-5)
