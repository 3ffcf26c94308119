"""The meta-training step: equal to a loop over tasks, and the same sharded over 8 fake CPU
devices and under pmap as on one device."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from metareason.inner import inner_loop, make_meta_step, meta_loss
from test_loop import mlp_params, mse, task

T = 8


def tasks(seed):
    ts = [task(jax.random.key(seed + i), dtype=jnp.float32) for i in range(2 * T)]
    support = jax.tree.map(lambda *xs: jnp.stack(xs), *ts[:T])
    query = jax.tree.map(lambda *xs: jnp.stack(xs), *ts[T:])
    return support, query


def test_meta_loss_is_the_mean_over_tasks():
    params = mlp_params(jax.random.key(0), dtype=jnp.float32)
    support, query = tasks(1)
    value, aux = meta_loss(params, support, query, loss_fn=mse, inner_optimizer=optax.sgd(0.1), steps=2)
    each = [mse(inner_loop(mse, params, jax.tree.map(lambda x: x[i], support), optax.sgd(0.1), steps=2).params,
                jax.tree.map(lambda x: x[i], query)) for i in range(T)]
    np.testing.assert_allclose(aux["query"], each, rtol=1e-5)
    np.testing.assert_allclose(value, np.mean(each), rtol=1e-5)


def test_sharded_and_pmapped_meta_gradients_equal_one_device():
    assert len(jax.devices()) == 8
    params = mlp_params(jax.random.key(2), dtype=jnp.float32)
    support, query = tasks(3)

    def grad(p, s, q):
        return jax.grad(lambda p: meta_loss(p, s, q, loss_fn=mse, inner_optimizer=optax.sgd(0.1), steps=3)[0])(p)

    one = jax.jit(grad)(params, support, query)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    shard = NamedSharding(mesh, P("data"))
    sharded = jax.jit(grad)(params, jax.device_put(support, shard), jax.device_put(query, shard))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), sharded, one)
    # pmap: one task per device, gradients averaged with pmean
    per = jax.pmap(lambda p, s, q: jax.lax.pmean(grad(p, jax.tree.map(lambda x: x[None], s),
                                                      jax.tree.map(lambda x: x[None], q)), "i"),
                   axis_name="i", in_axes=(None, 0, 0))(params, support, query)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[0], b, rtol=1e-5, atol=1e-7), per, one)


def test_meta_step_lowers_the_query_loss():
    params = mlp_params(jax.random.key(4), sizes=(1, 16, 1), dtype=jnp.float32)
    outer = optax.adam(1e-2)
    step = make_meta_step(mse, optax.sgd(0.1), outer, steps=1)
    opt_state = outer.init(params)
    support, query = tasks(5)
    first = None
    for _ in range(30):
        params, opt_state, m = step(params, opt_state, support, query)
        first = float(m["loss"]) if first is None else first
    assert float(m["loss"]) < 0.8 * first
