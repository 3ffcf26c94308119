"""Lab meta-learning vs SFT (metareason.studies.lab_meta) against independent references: losses on
hand-built token sequences through `metareason.model.apply`, a hand-written one-step MAML on
unpadded sequences (value and meta-gradient), a manual AdamW loop with `sft_loss`, and a short
meta-training run that must lower the held-out adapted answer loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metareason.inner.meta import meta_loss
from metareason.model import apply, init
from metareason.studies.lab_eval import evaluate_lab, lab_table
from metareason.studies.lab_meta import LabMetaConfig, make_lab_step, meta_train_lab, sft_train_lab
from metareason.studies.lab_tasks import (LabMetaError, LabTasks, build_tasks, masked_nll, query_loss, select,
                                          support_loss)
from metareason.tasks.lab import LabConfig, encode_example, lab_records
from metareason.tokenize.lab import LAB_VOCAB
from metareason.train.loss import sft_loss
from metareason.train.presets import model_preset
from metareason.train.state import OptimizerConfig, make_optimizer
from metareason.train.trajectories import question_schedule

CONFIG = model_preset("lab-tiny")
V = LAB_VOCAB.ids

# (question, trajectory, answer) and the same by hand, token by token
RECORDS = [
    {"question": "compute 7 + 5 ?", "trajectory": "7 + 5 = 12", "answer": "12"},
    {"question": "compute 3 * 4 - 2 ?", "trajectory": "3 * 4 = 12 ; 12 - 2 = 10 ; Therefore 10", "answer": "10"},
    {"question": "compute 9 - 6 ?", "trajectory": "9 - 6 = 3", "answer": "3"},
]
QUESTION_TOKENS = [["compute", "7", "+", "5", "?"], ["compute", "3", "*", "4", "-", "2", "?"],
                   ["compute", "9", "-", "6", "?"]]
TRAJECTORY_TOKENS = [["7", "+", "5", "=", "1", "2"],
                     ["3", "*", "4", "=", "1", "2", ";", "1", "2", "-", "2", "=", "1", "0", ";", "Therefore", "1", "0"],
                     ["9", "-", "6", "=", "3"]]
ANSWER_TOKENS = [["1", "2"], ["1", "0"], ["3"]]
TEMPLATE = ["</think>", "**Final", "Answer**", "\\boxed{"]


def ids(tokens):
    return [V[t] for t in tokens]


def hand_built(i, question=None, trajectory=None, answer=None):
    """(support, query, full) token lists and the positions each scores, built without the library
    (record i's tokens, or the given ones)."""
    prompt = ids(["<bos>", *(question or QUESTION_TOKENS[i]), "<think>"])
    traj, ans = ids(trajectory or TRAJECTORY_TOKENS[i]), ids(answer or ANSWER_TOKENS[i])
    tail = ids(TEMPLATE) + ans + ids(["}", "<eos>"])
    support = (prompt + traj, range(len(prompt), len(prompt) + len(traj)))
    a0 = len(prompt) + len(TEMPLATE)
    query = (prompt + tail, range(a0, a0 + len(ans)))
    f0 = len(prompt) + len(traj) + len(TEMPLATE)
    full = (prompt + traj + tail, range(f0, f0 + len(ans)))
    return support, query, full


def ref_nll(params, seq, scored):
    """Mean NLL of seq[j] for j in scored, from one unpadded forward pass (jnp: differentiable)."""
    logp = jax.nn.log_softmax(apply(params, jnp.asarray([seq], jnp.int32), config=CONFIG).logits[0], axis=-1)
    j = np.asarray(list(scored))
    return -jnp.mean(logp[j - 1, np.asarray(seq)[j]])


def ref_sgd(params, seq, scored, lr, steps):
    """`steps` plain SGD steps on ref_nll(., seq, scored)."""
    grad = jax.jit(jax.grad(lambda p: ref_nll(p, seq, scored)))
    for _ in range(steps):
        params = jax.tree.map(lambda a, b: a - lr * b, params, grad(params))
    return params


def ref_exact(params, seq, scored):
    logits = np.asarray(apply(params, jnp.asarray([seq], jnp.int32), config=CONFIG).logits[0])
    return all(int(np.argmax(logits[j - 1])) == seq[j] for j in scored)


@functools.cache
def _vmapped(fn):
    return jax.jit(jax.vmap(functools.partial(fn, config=CONFIG), in_axes=(None, 0)))


def ours(fn, params, batch):
    """fn (one task) over every task of batch, vmapped and jitted: float[N]."""
    return _vmapped(fn)(params, batch)


@pytest.fixture(scope="module")
def params():
    return init(CONFIG, jax.random.key(0))


@pytest.fixture(scope="module")
def tasks():
    return build_tasks(RECORDS)


def test_layout_matches_hand_built_sequences(tasks):
    assert tasks.size == 3 and tasks.lengths == (32, 24, 40)
    for i in range(3):
        t = select(tasks, i)
        for part, (seq, scored) in zip((t.support, t.query, t.full), hand_built(i)):
            assert part["tokens"][:len(seq)].tolist() == seq
            assert np.all(part["tokens"][len(seq):] == LAB_VOCAB.pad_id)
            assert np.flatnonzero(part["weights"]).tolist() == list(scored)
        ex = encode_example(**RECORDS[i])
        n = len(ex["tokens"])
        assert t.sft["tokens"][:n].tolist() == ex["tokens"].tolist()
        assert t.sft["loss_mask"][:n].tolist() == ex["loss_mask"].tolist() and not t.sft["loss_mask"][n:].any()
        assert t.sft["segment_ids"].tolist() == [1] * n + [0] * (40 - n)


def test_support_query_and_in_context_losses_equal_direct_reference(params, tasks):
    got = [ours(support_loss, params, tasks.support), ours(query_loss, params, tasks.query),
           ours(masked_nll, params, tasks.full)]
    for i in range(3):
        for kind, (seq, scored) in enumerate(hand_built(i)):
            np.testing.assert_allclose(got[kind][i], ref_nll(params, seq, scored), rtol=1e-5)


def test_meta_loss_is_the_query_loss_at_lr_0_and_a_hand_written_maml_at_lr_half(params):
    # two questions of equal token lengths, so the reference vmaps over unpadded sequences; the inner
    # learning rate is traced, so one compilation serves both rates
    pair = [RECORDS[0], {"question": "compute 8 + 6 ?", "trajectory": "8 + 6 = 14", "answer": "14"}]
    built = [hand_built(0), hand_built(0, ["compute", "8", "+", "6", "?"], ["8", "+", "6", "=", "1", "4"], ["1", "4"])]
    tasks = build_tasks(pair)
    (_, s_pos), (_, q_pos), _ = built[0]
    s_seqs, q_seqs = (jnp.asarray([b[k][0] for b in built], jnp.int32) for k in (0, 1))

    def nll(p, seq, pos):
        logp = jax.nn.log_softmax(apply(p, seq[None], config=CONFIG).logits[0], axis=-1)
        j = np.asarray(list(pos))
        return -jnp.mean(logp[j - 1, seq[j]])

    def reference(p, lr):
        def one(s, q):
            adapted = jax.tree.map(lambda a, b: a - lr * b, p, jax.grad(nll)(p, s, s_pos))
            return nll(adapted, q, q_pos)
        return jnp.mean(jax.vmap(one)(s_seqs, q_seqs))

    loss = functools.partial(masked_nll, config=CONFIG)
    maml = jax.jit(jax.value_and_grad(lambda p, lr: meta_loss(p, tasks.support, tasks.query, loss_fn=loss,
                                                              inner_optimizer=optax.sgd(lr), steps=1), has_aux=True))
    ref = jax.jit(jax.value_and_grad(reference))
    plain = ours(query_loss, params, tasks.query)
    for lr in (0.0, 0.5):
        ((v, aux), g), (v_ref, g_ref) = maml(params, lr), ref(params, lr)
        np.testing.assert_allclose(v, v_ref, rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6), g, g_ref)
        np.testing.assert_allclose(aux["inner_before"], ours(support_loss, params, tasks.support), rtol=1e-5)
        if lr == 0.0:  # no inner-step effect: the plain query loss, per task and on average
            np.testing.assert_allclose(aux["query"], plain, rtol=1e-5)
            np.testing.assert_allclose(v, np.mean(plain), rtol=1e-5)
            np.testing.assert_allclose(aux["inner_after"], aux["inner_before"], rtol=1e-6)
        else:
            assert abs(float(v) - np.mean(plain)) > 1e-3 and np.all(aux["inner_after"] < aux["inner_before"])


def test_evaluate_lab_per_question_matches_reference(params, tasks):
    lr, k, which = 0.5, 2, [2, 0, 2]
    res = evaluate_lab(params, select(tasks, np.array(which)), config=CONFIG, inner_lr=lr, inner_steps=k,
                       chunk=2)  # 3 tasks: a full chunk and a padded one
    assert {len(v) for v in res.values()} == {3}
    for n, i in enumerate(which):
        (s, s_pos), (q, q_pos), (f, f_pos) = hand_built(i)
        p = ref_sgd(params, s, s_pos, lr, k)
        np.testing.assert_allclose(res["in_context"][n], ref_nll(params, f, f_pos), rtol=1e-5)
        np.testing.assert_allclose(res["question_only"][n], ref_nll(params, q, q_pos), rtol=1e-5)
        np.testing.assert_allclose(res["adapted"][n], ref_nll(p, q, q_pos), rtol=1e-4)
        np.testing.assert_allclose(res["support_before"][n], ref_nll(params, s, s_pos), rtol=1e-5)
        np.testing.assert_allclose(res["support_after"][n], ref_nll(p, s, s_pos), rtol=1e-4)
        assert res["exact_in_context"][n] == ref_exact(params, f, f_pos)
        assert res["exact_adapted"][n] == ref_exact(p, q, q_pos)


def test_sft_arm_is_adamw_on_sft_loss_over_the_schedule(params, tasks):
    cfg = LabMetaConfig(model="lab-tiny", steps=3, questions_per_step=2, seed=4,
                        optimizer=OptimizerConfig(lr=1e-2, warmup_steps=1))
    res = sft_train_lab(cfg, tasks, params=params, progress=False)
    opt = make_optimizer(cfg.optimizer, cfg.steps)

    @jax.jit
    def adamw_step(p, state, batch):
        u, state = opt.update(jax.grad(lambda p: sft_loss(p, batch, config=CONFIG)[0])(p), state, p)
        return optax.apply_updates(p, u), state

    p, state = params, opt.init(params)
    for idx in question_schedule(tasks.size, 2, 3, seed=4):
        p, state = adamw_step(p, state, {k: jnp.asarray(v[idx]) for k, v in tasks.sft.items()})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), res.params, p)
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(params)))
    assert moved > 1e-2  # three AdamW steps of lr 1e-2 (the tolerance is 0.1% of one)
    assert [h["step"] for h in res.history] == [3] and res.seconds > 0


def test_question_schedule_never_repeats_within_a_step_and_covers_each_epoch():
    s = question_schedule(10, 3, 7, seed=1)
    assert s.shape == (7, 3)
    assert all(len(set(row)) == 3 for row in s)
    assert len(set(s[:3].ravel())) == 9  # one epoch: 3 steps of 3 distinct questions out of 10
    np.testing.assert_array_equal(s, question_schedule(10, 3, 7, seed=1))


@pytest.mark.slow  # a training-behaviour check; the exact MAML tests above run by default
def test_a_few_meta_steps_lower_the_held_out_adapted_answer_loss():
    # measured (lab-tiny, 24 steps of 8 questions, inner SGD 0.3, 16 held-out questions): adapted answer
    # loss 3.93 -> 1.50 with seed 0 (seeds 1, 2: 4.64 -> 1.71, 3.94 -> 1.72; ratios 0.38-0.44), while the
    # question-only loss ends at 3.70 (4.39, 4.51): the gain comes from the inner step, not from answering
    lab = LabConfig(families=("arith",), difficulty=(1,), train_size=96, eval_size=16, style="short")
    train = build_tasks(lab_records(lab, "train"))
    held = build_tasks(lab_records(lab, "test"), lengths=train.lengths)
    cfg = LabMetaConfig(model="lab-tiny", steps=24, questions_per_step=8, inner_lr=0.3, log_every=8,
                        optimizer=OptimizerConfig(lr=3e-3, warmup_steps=5))
    p0 = init(CONFIG, jax.random.key(cfg.seed))
    before = evaluate_lab(p0, held, config=CONFIG, inner_lr=0.3, inner_steps=1, chunk=16)
    res = meta_train_lab(cfg, train, progress=False)
    after = evaluate_lab(res.params, held, config=CONFIG, inner_lr=0.3, inner_steps=1, chunk=16)
    assert after["adapted"].mean() < 0.6 * before["adapted"].mean()
    assert after["adapted"].mean() < after["question_only"].mean() - 1.0
    assert len(res.history) == 3 and all(h["support_after"] < h["support_before"] for h in res.history)


def test_table_intervals_against_closed_forms():
    # the intervals themselves (t, bootstrap, Wilson) are tested against closed forms in tests/test_stats.py
    x = np.array([1.0, 2.0, 3.0, 4.0])
    res = {a: {"in_context": x + d, "adapted": x, "question_only": x, "exact_in_context": x > 2,
               "exact_adapted": x > 3, "exact_question_only": x > 9} for a, d in (("meta", 1.0), ("sft", 0.0))}
    t = lab_table(res, {"meta": {"accuracy": 0.5, "n": 4, "format_rate": 1.0, "mean_length": 3.0}},
                  as_used={"meta": "adapted", "sft": "in_context"})
    np.testing.assert_allclose(t["paired_difference"]["in_context"]["mean"], 1.0)
    np.testing.assert_allclose(t["as_used"]["mean"], 0.0)
    assert t["exact"]["meta"]["adapted"]["mean"] == 0.25 and t["greedy_accuracy"]["meta"]["mean"] == 0.5


def test_bad_input_is_one_line_errors(tasks):
    cases = [
        (lambda: build_tasks([]), "at least one record"),
        (lambda: build_tasks([{"question": "compute 1 + 1 ?", "answer": "2"}]), "lacks trajectory"),
        (lambda: build_tasks([{"question": "compute 1 + 1 ?", "trajectory": "", "answer": "2"}]), "empty trajectory"),
        (lambda: build_tasks([{"question": "compute 1 + 1 ?", "trajectory": "1 + 1 = 2", "answer": ""}]),
         "empty answer"),
        (lambda: build_tasks(RECORDS, lengths=(8, 24, 40)), "shorter than the longest"),
        (lambda: LabMetaConfig(mode="third_order"), "unknown inner mode"),
        (lambda: LabMetaConfig(inner_lr=-1.0), "inner_lr"),
        (lambda: LabMetaConfig(steps=0), "steps must be >= 1"),
        (lambda: make_lab_step("reptile", LabMetaConfig(), CONFIG, optax.sgd(1.0)), "unknown arm"),
        (lambda: meta_train_lab(LabMetaConfig(model="lab-tiny", questions_per_step=4), tasks), "exceeds the 3"),
        (lambda: sft_train_lab(LabMetaConfig(model="lab-tiny", eval_every=1), tasks), "needs eval_tasks"),
        (lambda: evaluate_lab({}, dict(tasks._asdict()), config=CONFIG, inner_lr=0.1, inner_steps=1), "LabTasks"),
    ]
    with pytest.raises(ValueError, match="exceeds the 3 training questions"):
        question_schedule(3, 4, 1, 0)
    for fn, msg in cases:
        with pytest.raises(LabMetaError, match=msg) as err:
            fn()
        assert "\n" not in str(err.value)
    assert isinstance(tasks, LabTasks)
