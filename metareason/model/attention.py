"""Mask-aware fused attention kernels behind `ModelConfig.attention_impl`.

The model hands attention a boolean mask [B, S, T] (True: query s sees key t) or None (plain
causal, S == T). The dense "xla" path in `metareason.model.transformer` materialises float32
scores [B, H, S, T]; the kernels here never do:

- `pallas_attention` ("pallas"): a flash-attention kernel written with `jax.experimental.pallas`:
  one program per (batch, query head, query block) runs an online softmax over key blocks and
  SKIPS every key block the mask leaves empty for the whole query block (a per-(query block, key
  block) flag computed from the mask; with mask None the causal structure bounds the loop
  instead). Gradients: `jax.custom_vjp` whose backward is plain JAX, recomputing the
  probabilities from the saved logsumexp one query block at a time (memory O(block_q x T) per
  head, no block skipping in the backward). On the CPU it runs in Pallas interpret mode; for a GPU
  it lowers to a Triton kernel (checked on the CPU by cross-platform lowering; never compiled to
  PTX nor run here: no GPU was lent).
- `splash_attention` ("splash"): JAX's own TPU splash attention
  (`jax.experimental.pallas.ops.tpu.splash_attention`), fed a static causal mask plus segment
  ids (packing), or the model's runtime mask as a dynamic mask (the probe's block mask, whose
  cuts are data). Runs on the CPU in interpret mode (tests); lowers to Mosaic for a TPU (checked
  by cross-platform lowering; never run on a TPU).
- cuDNN ("cudnn", in `transformer._attention`) through `jax.nn.dot_product_attention`: its
  arguments express causal (`is_causal`) and right padding (`query_seq_lengths` /
  `key_value_seq_lengths`) without a dense mask; the probe's block mask and packing's segment
  masks cannot be expressed that way and reach it as a dense [B, 1, S, T] mask.

Rows that see no key at all (never produced by the model: every query sees itself) give zeros
here, where "xla" gives a uniform average.

Axes: B batch, S queries, T keys, H query heads, K kv heads, G = H // K, Dh head dim.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

__all__ = ["pallas_attention", "splash_attention", "block_flags", "resolve_impl", "KernelError"]


class KernelError(ValueError):
    """Malformed attention-kernel inputs (one line, names the argument)."""


def _acc(dtype) -> jnp.dtype:
    return jnp.promote_types(dtype, jnp.float32)


def resolve_impl(impl: str, mask_is_none: bool, dtype) -> str:
    """The kernel "auto" means on the default backend: on a GPU cuDNN for plain causal attention
    in bf16/fp16 and the Pallas kernel for any mask; on a TPU splash; elsewhere (CPU) "xla", so
    nothing computed on the CPU changes. Any other impl is returned as given."""
    if impl != "auto":
        return impl
    backend = jax.default_backend()
    if backend == "gpu":
        low = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
        return "cudnn" if mask_is_none and low else "pallas"
    if backend == "tpu":
        return "splash"
    return "xla"


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def block_flags(mask: jax.Array, block_q: int, block_k: int) -> jax.Array:
    """mask bool[B, S, T] (S, T multiples of the blocks) -> int32[B, S // block_q, T // block_k]:
    1 where the (query block, key block) tile has any True entry, i.e. must be computed."""
    B, S, T = mask.shape
    if S % block_q or T % block_k:
        raise KernelError(f"mask shape {(S, T)} is not a multiple of the blocks {(block_q, block_k)}")
    tiles = mask.reshape(B, S // block_q, block_q, T // block_k, block_k)
    return tiles.any(axis=(2, 4)).astype(jnp.int32)


def _check_qkv(q, k, v, mask, k_slots_last):
    """Shapes (B, S, H, Dh, K, T), one-line errors otherwise."""
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise KernelError(f"q, k, v must be 4-D, got shapes {q.shape}, {k.shape}, {v.shape}")
    B, S, H, Dh = q.shape
    K, T = v.shape[1], v.shape[2]
    k_want = (B, K, Dh, T) if k_slots_last else (B, K, T, Dh)
    if v.shape != (B, K, T, Dh) or k.shape != k_want:
        raise KernelError(f"k {k.shape} / v {v.shape} do not match q {q.shape}: expected k {k_want}, v {(B, K, T, Dh)}")
    if H % K:
        raise KernelError(f"query heads {H} are not a multiple of kv heads {K}")
    if mask is None and S != T:
        raise KernelError(f"mask=None means causal self-attention (S == T), got S={S}, T={T}")
    if mask is not None and mask.shape != (B, S, T):
        raise KernelError(f"mask has shape {mask.shape}, expected {(B, S, T)}")
    return B, S, H, Dh, K, T


# --------------------------------------------------------------------------------------------
# Pallas flash attention with block skipping
# --------------------------------------------------------------------------------------------

def _fwd_kernel(*refs, causal, block_q, block_k, n_k, scale, k_slots_last, acc_dtype):
    """One (batch, head, query block): q [bq, Dh]; k [T, Dh] ([Dh, T] with slots last); v [T, Dh];
    mask int8 [bq, T] and flags int32 [nk_pad] unless causal -> out [bq, Dh], lse [bq]."""
    if causal:
        q_ref, k_ref, v_ref, o_ref, lse_ref = refs
        m_ref = f_ref = None
    else:
        q_ref, k_ref, v_ref, m_ref, f_ref, o_ref, lse_ref = refs
    qi = pl.program_id(2)
    q = q_ref[...]
    Dh = q.shape[-1]
    neg = jnp.asarray(-jnp.inf, acc_dtype)

    def compute(j, carry):
        m, l, acc = carry
        ks = pl.ds(j * block_k, block_k)
        if k_slots_last:
            s = lax.dot_general(q, k_ref[:, ks], (((1,), (0,)), ((), ())), preferred_element_type=acc_dtype)
        else:
            s = lax.dot_general(q, k_ref[ks, :], (((1,), (1,)), ((), ())), preferred_element_type=acc_dtype)
        s = s * scale
        if causal:
            rows = qi * block_q + lax.broadcasted_iota(jnp.int32, (block_q, block_k), 0)
            cols = j * block_k + lax.broadcasted_iota(jnp.int32, (block_q, block_k), 1)
            allowed = rows >= cols
        else:
            allowed = m_ref[:, ks] != 0
        s = jnp.where(allowed, s, neg)
        m_new = jnp.maximum(m, s.max(axis=-1))
        m_safe = jnp.where(m_new == neg, 0.0, m_new).astype(acc_dtype)  # a row with nothing seen yet
        p = jnp.exp(s - m_safe[:, None])
        alpha = jnp.exp(m - m_safe)
        l = alpha * l + p.sum(axis=-1)
        pv = lax.dot_general(p.astype(v_ref.dtype), v_ref[ks, :], (((1,), (0,)), ((), ())),
                             preferred_element_type=acc_dtype)
        return m_new, l, alpha[:, None] * acc + pv

    init = (jnp.full((block_q,), neg, acc_dtype), jnp.zeros((block_q,), acc_dtype),
            jnp.zeros((block_q, Dh), acc_dtype))
    if causal:  # key blocks past the query block's last row are empty: the loop stops before them
        upper = jnp.minimum(n_k, lax.div((qi + 1) * block_q + block_k - 1, block_k))
        m, l, acc = lax.fori_loop(0, upper, compute, init)
    else:  # key blocks the mask leaves empty for this query block are skipped
        def body(j, carry):
            return lax.cond(f_ref[j] != 0, lambda c: compute(j, c), lambda c: c, carry)
        m, l, acc = lax.fori_loop(0, n_k, body, init)
    seen = l > 0
    o_ref[...] = (acc / jnp.where(seen, l, 1.0)[:, None]).astype(o_ref.dtype)
    # +inf for a row that saw nothing: the backward's exp(s - lse) is then 0 there
    lse_ref[...] = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), jnp.inf).astype(lse_ref.dtype)


def _triton_params():
    from jax.experimental.pallas import triton as pltriton  # GPU only: ~0.1 s import, on first use
    return pltriton.CompilerParams(num_warps=4, num_stages=2)


def _flash_forward(q, k, v, mask8, flags, *, causal, block_q, block_k, k_slots_last, interpret):
    """q [B, H, Sp, Dh]; k [B, K, Tp, Dh] (or [B, K, Dh, Tp]); v [B, K, Tp, Dh]; mask8 int8
    [B, Sp, Tp] and flags int32 [B, nq, nk_pad] (None when causal) -> (out [B, H, Sp, Dh],
    lse acc[B, H, Sp])."""
    B, H, Sp, Dh = q.shape
    K, Tp = v.shape[1], v.shape[2]
    G = H // K
    acc = _acc(q.dtype)
    n_q, n_k = Sp // block_q, Tp // block_k
    kernel = functools.partial(_fwd_kernel, causal=causal, block_q=block_q, block_k=block_k, n_k=n_k,
                               scale=Dh ** -0.5, k_slots_last=k_slots_last, acc_dtype=acc)
    k_block = (None, None, Dh, Tp) if k_slots_last else (None, None, Tp, Dh)
    in_specs = [pl.BlockSpec((None, None, block_q, Dh), lambda b, h, i: (b, h, i, 0)),
                pl.BlockSpec(k_block, lambda b, h, i: (b, h // G, 0, 0)),
                pl.BlockSpec((None, None, Tp, Dh), lambda b, h, i: (b, h // G, 0, 0))]
    args = [q, k, v]
    if not causal:
        in_specs += [pl.BlockSpec((None, block_q, Tp), lambda b, h, i: (b, i, 0)),
                     pl.BlockSpec((None, None, flags.shape[-1]), lambda b, h, i: (b, i, 0))]
        args += [mask8, flags]
    out, lse = pl.pallas_call(
        kernel,
        grid=(B, H, n_q),
        in_specs=in_specs,
        out_specs=[pl.BlockSpec((None, None, block_q, Dh), lambda b, h, i: (b, h, i, 0)),
                   pl.BlockSpec((None, None, block_q), lambda b, h, i: (b, h, i))],
        out_shape=[jax.ShapeDtypeStruct((B, H, Sp, Dh), q.dtype), jax.ShapeDtypeStruct((B, H, Sp), acc)],
        interpret=interpret,
        # Triton, not Mosaic GPU: the kernel reads its key blocks out of whole [T, Dh] refs in
        # global memory (Mosaic GPU would stage those refs in shared memory)
        compiler_params=_triton_params(),
        name="metareason_flash_fwd",
    )(*args)
    return out, lse


def _flash_backward(q, k, v, mask8, out, lse, dout, *, causal, block_q, k_slots_last):
    """Plain JAX: dq, dk, dv of the flash forward, recomputing P = exp(s - lse) one query block
    at a time ([B, K, G, block_q, Tp] per block); dk, dv accumulate in float32 over the blocks."""
    B, H, Sp, Dh = q.shape
    K, Tp = v.shape[1], v.shape[2]
    G = H // K
    acc = _acc(q.dtype)
    scale = Dh ** -0.5
    kt = k.swapaxes(-1, -2) if k_slots_last else k                                   # [B, K, Tp, Dh]
    n_q = Sp // block_q
    split = lambda x: jnp.moveaxis(x.reshape(B, K, G, n_q, block_q, *x.shape[3:]), 3, 0)  # [n, B, K, G, bq, ..]
    delta = jnp.sum(dout.astype(acc) * out.astype(acc), axis=-1)                     # [B, H, Sp]
    xs = (split(q), split(dout), split(lse), split(delta), jnp.arange(n_q))
    if not causal:
        xs += (mask8.reshape(B, n_q, block_q, Tp).swapaxes(0, 1),)

    def step(carry, x):
        dk, dv = carry
        qb, dob, lb, db, i = x[:5]                                                    # [B, K, G, bq, ..]
        s = jnp.einsum("bkgqd,bktd->bkgqt", qb, kt, preferred_element_type=acc) * scale
        if causal:
            allowed = (i * block_q + jnp.arange(block_q))[:, None] >= jnp.arange(Tp)[None, :]
        else:
            allowed = x[5][:, None, None] != 0                                       # [B, 1, 1, bq, Tp]
        p = jnp.where(allowed, jnp.exp(s - lb[..., None]), 0.0)
        dv = dv + jnp.einsum("bkgqt,bkgqd->bktd", p.astype(q.dtype), dob, preferred_element_type=acc)
        dp = jnp.einsum("bkgqd,bktd->bkgqt", dob, v, preferred_element_type=acc)
        ds = (p * (dp - db[..., None]) * scale).astype(q.dtype)
        dq = jnp.einsum("bkgqt,bktd->bkgqd", ds, kt, preferred_element_type=acc)
        dk = dk + jnp.einsum("bkgqt,bkgqd->bktd", ds, qb, preferred_element_type=acc)
        return (dk, dv), dq.astype(q.dtype)

    zeros = jnp.zeros((B, K, Tp, Dh), acc)
    (dk, dv), dq = lax.scan(step, (zeros, zeros), xs)                                # dq [n, B, K, G, bq, Dh]
    dq = jnp.moveaxis(dq, 0, 3).reshape(B, H, Sp, Dh)
    dk = dk.swapaxes(-1, -2) if k_slots_last else dk
    return dq, dk.astype(k.dtype), dv.astype(v.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9))
def _flash(q, k, v, mask8, flags, causal, block_q, block_k, k_slots_last, interpret):
    return _flash_forward(q, k, v, mask8, flags, causal=causal, block_q=block_q, block_k=block_k,
                          k_slots_last=k_slots_last, interpret=interpret)[0]


def _flash_fwd(q, k, v, mask8, flags, causal, block_q, block_k, k_slots_last, interpret):
    out, lse = _flash_forward(q, k, v, mask8, flags, causal=causal, block_q=block_q, block_k=block_k,
                              k_slots_last=k_slots_last, interpret=interpret)
    return out, (q, k, v, mask8, flags, out, lse)


def _flash_bwd(causal, block_q, block_k, k_slots_last, interpret, res, dout):
    q, k, v, mask8, flags, out, lse = res
    dq, dk, dv = _flash_backward(q, k, v, mask8, out, lse, dout, causal=causal, block_q=block_q,
                                 k_slots_last=k_slots_last)
    return dq, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def pallas_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None, *,
                     k_slots_last: bool = False, block_q: int = 128, block_k: int = 128,
                     interpret: bool | None = None) -> jax.Array:
    """Flash attention with block skipping, the model's attention contract.

    q: [B, S, H, Dh]; k: [B, K, T, Dh], or [B, K, Dh, T] when `k_slots_last` (the KV cache's
    layout); v: [B, K, T, Dh]; mask: bool[B, S, T] (True: query s sees key t), or None for causal
    self-attention (S == T) -> [B, S, H, Dh] in q's dtype. Scores and softmax accumulate in
    float32 (float64 for float64). S and T are padded to the blocks (blocks shrink to a power of
    two >= 16 covering short sequences, e.g. a decode step). `interpret`: None runs Pallas interpret
    mode on the CPU and compiles elsewhere. Differentiable (custom VJP, plain-JAX backward)."""
    B, S, H, Dh, K, T = _check_qkv(q, k, v, mask, k_slots_last)
    if block_q < 1 or block_k < 1:
        raise KernelError(f"block sizes must be >= 1, got {block_q}, {block_k}")
    interpret = jax.default_backend() == "cpu" if interpret is None else interpret
    # short sequences (a decode step) shrink the blocks to a power of two >= 16 covering them
    # (Triton wants power-of-two tiles and dots of at least 16 rows)
    bq = min(block_q, max(16, 1 << (S - 1).bit_length()))
    bk = min(block_k, max(16, 1 << (T - 1).bit_length()))
    causal = mask is None
    if causal:  # S == T: one block size for both keeps the causal bound simple
        bq = bk = min(bq, bk)
    Sp, Tp = _cdiv(S, bq) * bq, _cdiv(T, bk) * bk
    qh = jnp.pad(q.transpose(0, 2, 1, 3), ((0, 0), (0, 0), (0, Sp - S), (0, 0)))
    k = jnp.pad(k, ((0, 0), (0, 0), (0, 0), (0, Tp - T)) if k_slots_last else ((0, 0), (0, 0), (0, Tp - T), (0, 0)))
    v = jnp.pad(v, ((0, 0), (0, 0), (0, Tp - T), (0, 0)))
    mask8 = flags = None
    if not causal:
        m = jnp.pad(mask, ((0, 0), (0, Sp - S), (0, Tp - T)))
        flags = block_flags(m, bq, bk)
        nk_pad = 1 << max(0, (flags.shape[-1] - 1).bit_length())  # power-of-two block for Triton
        flags = jnp.pad(flags, ((0, 0), (0, 0), (0, nk_pad - flags.shape[-1])))
        mask8 = m.astype(jnp.int8)
    out = _flash(qh, k, v, mask8, flags, causal, bq, bk, k_slots_last, interpret)
    return out[:, :, :S].transpose(0, 2, 1, 3)


# --------------------------------------------------------------------------------------------
# Splash attention (TPU), JAX's own kernel
# --------------------------------------------------------------------------------------------

def _splash():
    """JAX's splash attention modules (splash_attention_kernel, splash_attention_mask)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import (  # TPU only: ~0.1 s import, on first use
        splash_attention_kernel, splash_attention_mask)
    return splash_attention_kernel, splash_attention_mask


def _splash_block_sizes(bq: int, bk: int):
    sk, _ = _splash()
    return sk.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq, block_kv_dkv=bk,
                         block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk)


def _splash_kernel(mask_heads, bq, bk, interpret):
    """A splash MQA kernel for a [G, Sp, Tp] mask: a numpy array or a static splash mask
    (static sparsity) or a jax array (dynamic: the mask info is computed on the device)."""
    sk, _ = _splash()
    kern = sk.make_splash_mqa_single_device(mask_heads, block_sizes=_splash_block_sizes(bq, bk), interpret=interpret)
    if isinstance(mask_heads, jax.Array):
        # JAX 0.10.2 turns MaskInfo.is_dynamic_mask into an array (a tracer under jit, which the
        # kernel then tests with `if`); put the Python bool back
        fix = lambda mi: None if mi is None else mi._replace(is_dynamic_mask=True)
        kern = sk.SplashAttentionKernel(fix(kern.fwd_mask_info), fix(kern.dq_mask_info), fix(kern.dkv_mask_info),
                                        **kern.kwargs)
    return kern


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None, *,
                     segment_ids: jax.Array | None = None, k_slots_last: bool = False, block: int = 128,
                     interpret: bool | None = None) -> jax.Array:
    """JAX's TPU splash attention under the model's attention contract.

    q: [B, S, H, Dh]; k: [B, K, T, Dh] (or [B, K, Dh, T] with `k_slots_last`, transposed here);
    v: [B, K, T, Dh]; then either mask bool[B, S, T] (any mask, e.g. the probe's block mask:
    passed to splash as a dynamic mask, its block sparsity computed on the device), or mask None
    for causal self-attention (S == T: a static `CausalMask`), optionally with segment_ids
    int[B, S] (packing: query s sees key t iff t <= s and the ids match, as splash's
    `SegmentIds`) -> [B, S, H, Dh]. Each kv head runs as one MQA call over its G query heads
    (vmapped over batch and kv heads). S, T are padded to `block`, a multiple of 128 (padded keys
    are never seen).
    `interpret`: None runs interpret mode on the CPU, compiled Mosaic on a TPU."""
    sk, smask = _splash()
    B, S, H, Dh, K, T = _check_qkv(q, k, v, mask, k_slots_last)
    if mask is not None and segment_ids is not None:
        raise KernelError("pass either mask or segment_ids, not both (a mask already says who sees whom)")
    if segment_ids is not None and segment_ids.shape != (B, S):
        raise KernelError(f"segment_ids has shape {segment_ids.shape}, expected {(B, S)}")
    interpret = jax.default_backend() == "cpu" if interpret is None else interpret
    if block < 128 or block % 128:
        raise KernelError(f"splash block must be a multiple of 128 (TPU lanes), got {block}")
    G = H // K
    b = block
    Sp, Tp = _cdiv(S, b) * b, _cdiv(T, b) * b
    kt = k.swapaxes(-1, -2) if k_slots_last else k
    # splash does not scale: fold Dh^-1/2 into q (in q's dtype; "xla" scales the float32 scores)
    qg = (q * jnp.asarray(Dh ** -0.5, q.dtype)).reshape(B, S, K, G, Dh).transpose(0, 2, 3, 1, 4)
    qg = jnp.pad(qg, ((0, 0), (0, 0), (0, 0), (0, Sp - S), (0, 0)))                 # [B, K, G, Sp, Dh]
    kt = jnp.pad(kt, ((0, 0), (0, 0), (0, Tp - T), (0, 0)))
    vp = jnp.pad(v, ((0, 0), (0, 0), (0, Tp - T), (0, 0)))
    if mask is None:
        kern = _splash_kernel(smask.MultiHeadMask([smask.CausalMask((Sp, Tp))] * G), b, b, interpret)
        seg = jnp.ones((B, S), jnp.int32) if segment_ids is None else jnp.asarray(segment_ids, jnp.int32)
        # padded queries and keys get id -1: padded queries see padded keys (no empty rows), real
        # queries never see them
        q_seg = jnp.pad(seg, ((0, 0), (0, Sp - S)), constant_values=-1)
        kv_seg = jnp.pad(seg, ((0, 0), (0, Tp - T)), constant_values=-1)

        def one(qk, kk, vk, qs, ks):
            return kern(qk, kk, vk, segment_ids=sk.SegmentIds(q=qs, kv=ks))
        run = jax.vmap(jax.vmap(one, in_axes=(0, 0, 0, None, None)), in_axes=(0, 0, 0, 0, 0))
        out = run(qg, kt, vp, q_seg, kv_seg)
    else:
        m = jnp.pad(mask, ((0, 0), (0, Sp - S), (0, Tp - T)))
        m = m | ((jnp.arange(Sp) >= S)[:, None] & (jnp.arange(Tp) == 0)[None, :])[None]  # padded rows see key 0

        def one_batch(qb, kb, vb, mb):
            kern = _splash_kernel(jnp.broadcast_to(mb, (G, Sp, Tp)), b, b, interpret)
            return jax.vmap(kern)(qb, kb, vb)
        out = jax.vmap(one_batch)(qg, kt, vp, m)
    out = out[:, :, :, :S].astype(q.dtype)                                            # [B, K, G, S, Dh]
    return out.transpose(0, 3, 1, 2, 4).reshape(B, S, H, Dh)
