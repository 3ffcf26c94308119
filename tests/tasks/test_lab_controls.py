"""Lab controls of issue 18: incorrect long twins, unconfirmed reflections and silent corrections,
k distinct trajectories per question, and defaults that reproduce the lab's earlier records."""

import hashlib
import json
from fractions import Fraction

import numpy as np
import pytest

from metareason.stats import rate_interval
from metareason.tasks import FAMILIES, LabConfig, lab_records, verify
from metareason.tasks.checker import _chains, _env, evaluate
from metareason.tasks.styles import distinct_capacity, reflection_events, render, render_twins
from metareason.tokenize import LAB_VOCAB

REFL = ("Wait", "Hold_on", "Hmm")


def test_default_rates_reproduce_the_records_of_before():
    """sha256 of these records computed with the code at main before the controls existed (the
    records now also carry "mode", "" by default: it is left out of the hash)."""
    h = hashlib.sha256()
    for cfg, split, also in [
            (LabConfig(train_size=60, eval_size=20, seed=3), "train", ()),
            (LabConfig(train_size=30, eval_size=20, seed=1), "test", ("incorrect", "short", "summary")),
            (LabConfig(families=("arith", "linear"), heldout_families=("pointer", "addition"), eval_size=25,
                       train_size=20, difficulty=(1, 2, 3)), "heldout", ("incorrect",))]:
        for r in lab_records(cfg, split, also_styles=also):
            assert r.pop("mode") == ""
            h.update(json.dumps(r, sort_keys=True).encode())
    assert h.hexdigest() == "20cb923e2e8f7a1378631db27d1c0d160ecc58ec8a97ff73b09c3a10222e218d"


def _words_at_tokens(text):
    """(word, index of its first token in LAB_VOCAB.split(text)) for every whitespace word."""
    out, n = [], 0
    for w in text.split():
        out.append((w, n))
        n += len(LAB_VOCAB.split(w))
    return out


def _chain_true(parts, op, env, mapping):
    """A chain is true when its parts (a bare unknown "x" left out) agree, evaluated independently."""
    if op == "->":
        return all(len(a) == 1 and len(b) == 1 and mapping.get(a[0]) == b[0] for a, b in zip(parts, parts[1:]))
    values = [evaluate(p, env) for p in parts if p != ["x"]]
    return all(v == values[0] for v in values)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_incorrect_long_twins_differ_from_the_slip_on(family):
    fam, rng = FAMILIES[family], np.random.default_rng(7)
    for n in range(200):
        problem = fam.sample(rng, 1 + n % 3)
        good, bad, slip = render_twins(fam, problem, rng)
        assert (good.style, bad.style, bad.slip) == ("long", "incorrect-long", slip)
        tg, tb = LAB_VOCAB.encode(good.text), LAB_VOCAB.encode(bad.text)
        assert tg[:slip] == tb[:slip] and tg != tb
        # the word starting at the slip token is the value, right in one twin and wrong in the other
        wg, wb = dict((i, w) for w, i in _words_at_tokens(good.text)), dict((i, w) for w, i in _words_at_tokens(bad.text))
        assert slip in wg and slip in wb and wg[slip] != wb[slip] and wb[slip].isalnum()
        first_diff = next(i for i, (a, b) in enumerate(zip(tg, tb)) if a != b)
        assert slip <= first_diff < slip + max(len(LAB_VOCAB.split(wg[slip])), len(LAB_VOCAB.split(wb[slip])))
        # the checker: the correct twin is valid, the incorrect one reaches its own wrong answer
        assert verify(problem.question, good.text).is_valid_solution(problem.answer)
        v = verify(problem.question, bad.text)
        assert v.is_incorrect_solution(problem.answer) and v.conclusion == bad.answer != problem.answer
        # ... which follows from the slipped value: every unmarked chain outside the slipped
        # statement (and its check, which restates it) and the Alternatively route is true, the
        # slipped chain is false, and the last
        # step before the route states the answer reached
        env, mapping = _env(problem.question)
        statements = bad.text.split(" ; ")
        slip_stmt = next(k for k, s in enumerate(statements)
                         if len(LAB_VOCAB.split(" ; ".join(statements[:k + 1]))) > slip)
        for k, st in enumerate(statements):
            if st.startswith("Alternatively") or st.startswith("Therefore"):
                continue
            chains = _chains(st)
            for j, c in enumerate(chains):
                if c.slip:
                    assert not _chain_true(c.parts, c.op, env, mapping)
                elif (k == slip_stmt and j == len(chains) - 1) or (k == slip_stmt + 1 and st.startswith("check")):
                    assert not _chain_true(c.parts, c.op, env, mapping), (problem.question, st)
                else:
                    assert _chain_true(c.parts, c.op, env, mapping), (problem.question, bad.text, st)
        last = [s for s in statements if not s.startswith(("Alternatively", "Therefore", "check"))][-1]
        assert last.split()[-1] == bad.answer
        assert bad.text.endswith(f"Therefore answer is {bad.answer}")
        assert "answer is" not in bad.text[:bad.text.rindex("Therefore")]  # no early restatement
        assert reflection_events(bad.text) == list(bad.events)


def test_render_incorrect_long_style_matches_its_twin():
    fam, problem = FAMILIES["arith"], FAMILIES["arith"].sample(np.random.default_rng(1), 2)
    t = render(fam, problem, "incorrect-long", np.random.default_rng(5))
    good, bad, _ = render_twins(fam, problem, np.random.default_rng(5))
    assert t == bad and t.answer != problem.answer
    assert render(fam, problem, "long", np.random.default_rng(5)).text == good.text  # same random choices


def test_reflection_events_on_a_hand_written_text():
    text = ("step 1 : 12 + 7 = 18 Wait , 12 + 7 = 19 ; step 2 : 19 - 5 = 14 Hmm , 19 - 5 = 14 ; "
            "step 3 : 14 + 3 = 16 , 14 + 3 = 17 ; 2 + 7 + 0 = 9 , write 9 carry 0 ; Alternatively , from 1 = 1")
    toks = LAB_VOCAB.split(text)
    got = reflection_events(text)
    assert [(e["kind"], e["word"]) for e in got] == [("corrected", "Wait"), ("confirmed", "Hmm"), ("silent", ","),
                                                     ("alternatively", "Alternatively")]
    # hand-counted token indices ("12" is two tokens)
    assert [e["index"] for e in got] == [10, 30, 50, 72]
    assert all(toks[e["index"]] == e["word"] for e in got)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_confirm_and_silent_rates_are_planted_as_configured(family):
    fam, rng = FAMILIES[family], np.random.default_rng(11)
    confirm_rate, silent_rate, slip_rate = 0.25, 0.4, 0.3
    slippable = confirmed = corrected = silent = 0
    for n in range(400):
        problem = fam.sample(rng, 1 + n % 3)
        t = render(fam, problem, "long", rng, confirm_rate=confirm_rate, silent_rate=silent_rate)
        found = reflection_events(t.text)
        assert found == list(t.events)  # the text alone tells the kinds apart
        assert all(LAB_VOCAB.split(t.text)[e["index"]] == e["word"] for e in found)
        kinds = [e["kind"] for e in found]
        v = verify(problem.question, t.text)  # the checker reads confirmations and silent corrections
        assert v.is_valid_solution(problem.answer), t.text
        slippable += sum(len(s.chain) >= 2 for s in fam.solve(problem))
        confirmed += kinds.count("confirmed")
        corrected += kinds.count("corrected")
        silent += kinds.count("silent")
    assert rate_interval(confirmed, slippable, 0.99).low <= confirm_rate <= rate_interval(confirmed, slippable, 0.99).high
    assert rate_interval(silent, silent + corrected, 0.99).low <= silent_rate <= rate_interval(silent, silent + corrected, 0.99).high
    slips = rate_interval(silent + corrected, slippable, 0.99)
    assert slips.low <= slip_rate <= slips.high


def test_rates_are_validated():
    with pytest.raises(ValueError, match="slip_rate \\+ confirm_rate must be <= 1"):
        LabConfig(confirm_rate=0.8)
    with pytest.raises(ValueError, match="silent_rate must be in \\[0, 1\\]"):
        LabConfig(silent_rate=1.5)


@pytest.mark.parametrize("style, rates, draws", [
    ("long", dict(slip_rate=1.0, check_rate=0.0), 3000),
    ("long", dict(slip_rate=0.0, check_rate=0.0, confirm_rate=0.5), 1500),
    ("long", dict(slip_rate=1.0, check_rate=0.0, silent_rate=0.5), 12000),
    ("incorrect", {}, 1000),
])
def test_distinct_capacity_matches_brute_force(style, rates, draws):
    fam = FAMILIES["pointer"]
    problem = fam.sample(np.random.default_rng(3), 1)  # 2 hops over 6 letters
    rng = np.random.default_rng(4)
    seen = {render(fam, problem, style, rng, **rates).text for _ in range(draws)}
    assert len(seen) == distinct_capacity(fam, problem, style, **rates)


def test_distinct_capacity_closed_forms_and_lower_bound():
    fam = FAMILIES["pointer"]
    problem = fam.sample(np.random.default_rng(3), 1)
    # per step: 5 wrong letters x 3 reflection words (+1 silent), or plain ("Since" possible after step 1)
    assert distinct_capacity(fam, problem, "long", slip_rate=1.0, check_rate=0.0) == 15 * 15
    assert distinct_capacity(fam, problem, "long") == (15 + 1) * 2 * (15 + 2) * 2
    assert all(distinct_capacity(fam, problem, st) == 1 for st in ("short", "summary", "none"))
    bound = distinct_capacity(fam, problem, "incorrect-long", check_rate=0.0)
    rng = np.random.default_rng(8)
    seen = {render(fam, problem, "incorrect-long", rng, check_rate=0.0).text for _ in range(4000)}
    assert 0 < bound <= len(seen)


def test_k_distinct_trajectories_per_question_and_the_capacity_error():
    config = LabConfig(families=("arith", "pointer"), train_size=20, trajectories_per_question=12, difficulty=(1,))
    for r in lab_records(config, "train"):
        assert len(set(r["generations"])) == 12 and r["trajectory"] == r["generations"][0]
    first = LabConfig(families=("arith", "pointer"), train_size=20, difficulty=(1,))
    firsts = {r["id"]: r["trajectory"] for r in lab_records(first, "train") if r["id"].endswith("-0")}
    assert firsts == {r["id"]: r["trajectory"] for r in lab_records(config, "train") if r["id"].endswith("-0")}
    with pytest.raises(ValueError, match=r"^lab: question '.*' has at most 1 distinct short trajectories, "
                                         r"trajectories_per_question=2$"):
        next(lab_records(LabConfig(style="short", trajectories_per_question=2, train_size=5), "train"))
    fam = FAMILIES["pointer"]
    cap = distinct_capacity(fam, fam.sample(np.random.default_rng(0), 1), "incorrect")
    with pytest.raises(ValueError, match="distinct incorrect trajectories, trajectories_per_question=40"):
        next(lab_records(LabConfig(families=("pointer",), style="incorrect", trajectories_per_question=40,
                                   train_size=5, difficulty=(1,)), "train"))
    assert cap < 40


def test_incorrect_long_records_carry_distinct_wrong_answers_per_question():
    config = LabConfig(families=("linear", "addition"), style="incorrect-long", trajectories_per_question=4,
                       train_size=15, difficulty=(1, 2))
    for r in lab_records(config, "train"):
        assert r["style"] == "incorrect-long" and len(set(r["generations"])) == 4
        for g in r["generations"]:  # the record keeps the true answer; each text reaches a wrong one
            v = verify(r["question"], g)
            assert v.is_incorrect_solution(r["answer"]) and g.endswith(f"answer is {v.conclusion}")


def test_draws_that_stop_finding_new_texts_fail_in_one_line(monkeypatch):
    import metareason.tasks.lab as lab
    monkeypatch.setattr(lab, "distinct_capacity", lambda *a, **k: 10**6)  # pretend the pre-check passes
    with pytest.raises(ValueError, match=r"^lab: question '.*': 1100 draws found 1 distinct short trajectories of "
                                         r"trajectories_per_question=2 \(capacity 1000000\)$"):
        next(lab_records(LabConfig(style="short", trajectories_per_question=2, train_size=5), "train"))


def test_checker_reads_confirmations_and_silent_corrections():
    """The independent checker accepts correct long trajectories with unconfirmed reflections and
    silent corrections (a confirmation must be true, a silent correction false), and counts a wrong
    confirmation or an unmarked false restatement as an error."""
    from metareason.tasks.checker import verify
    from metareason.tasks.families import FAMILIES
    from metareason.tasks.styles import render

    for name, family in FAMILIES.items():
        rng = np.random.default_rng(7)
        for _ in range(60):
            p = family.sample(rng, int(rng.integers(1, 3)))
            t = render(family, p, "long", rng, confirm_rate=0.3, silent_rate=0.5)
            assert verify(p.question, t.text).is_valid_solution(p.answer), (name, t.text)
    q = "compute 2 + 3 ?"
    assert verify(q, "2 + 3 = 5 Wait , 2 + 3 = 5 ; Therefore answer is 5").is_valid_solution("5")  # confirmed
    assert verify(q, "2 + 3 = 6 , 2 + 3 = 5 ; Therefore answer is 5").is_valid_solution("5")  # silent correction
    assert verify(q, "2 + 3 = 6 Wait , 2 + 3 = 6 ; Therefore answer is 6").false_steps == 2  # a false confirmation
    assert verify(q, "2 + 3 = 5 , 2 + 3 = 6 ; Therefore answer is 6").true_slips == 1  # a right value "corrected"
