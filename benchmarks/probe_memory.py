"""Memory of the probe (answer loss after every cut of one long trajectory) at full scale, from the
compiled program's memory analysis: nothing runs, the inputs are `jax.ShapeDtypeStruct`s.

    python benchmarks/probe_memory.py                        # 7B and 32B, xla / chunked / pallas, cache + packed
    python benchmarks/probe_memory.py --models 7b --impls xla,pallas,chunked --layers 2

For each (model, attention_impl, probe method) it lowers and compiles
`metareason.probe.loss.answer_nll` (one question, bf16 params, `--tokens` context tokens, `--cuts`
cuts, a probe of `--probe-len` tokens, `--cut-chunk` probes per pass, the "cache" method's prefill
`--context-chunk` tokens at a time) on the CPU and reads `compiled.memory_analysis()`: arguments
(the params), temporaries, outputs; peak = arguments + outputs + temporaries - aliased. XLA:CPU
converts the scanned bf16 layer weights to float32 for its dots (2 x their bytes of temporaries in
the "packed" programs, the same for every impl); the table also gives the peak less those copies.

With `--layers l` (compiling a 64-layer model on the CPU is slow: the cache method unrolls the
layers) it compiles l and 2l layers and extends each figure linearly to the full depth
(value(L) = value(l) + (L - l) * (value(2l) - value(l)) / l): exact when every layer adds the same
bytes (params, the KV cache) and the per-layer temporaries are reused, as they are in these programs.

"pallas" is compiled here in Pallas interpret mode (the CPU's lowering of the same kernel): its
temporaries are the kernel's blocks plus the dense int8 copy of the mask and the block flags, not
the Triton / Mosaic kernel's on-chip working set; what the comparison shows is the absence of the
[H, S, T] float32 scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from metareason.model import ModelConfig, init, split_layers  # noqa: E402
from metareason.probe.loss import ProbeBatch, answer_nll  # noqa: E402

GiB = 2 ** 30
# Qwen2.5 shapes (the models' config.json); bf16 weights and compute, as the probe runs them
MODELS = {
    "7b": ModelConfig(family="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28,
                      num_heads=28, num_kv_heads=4, max_position_embeddings=131072, rope_theta=1e6,
                      param_dtype="bfloat16", compute_dtype="bfloat16"),
    "32b": ModelConfig(family="qwen2", vocab_size=152064, hidden_size=5120, intermediate_size=27648, num_layers=64,
                       num_heads=40, num_kv_heads=8, max_position_embeddings=131072, rope_theta=1e6,
                       rms_norm_eps=1e-5, param_dtype="bfloat16", compute_dtype="bfloat16"),
}


def measure(config: ModelConfig, method: str, *, tokens: int, cuts: int, probe_len: int, cut_chunk: int,
            context_chunk: int) -> dict:
    """Compiles the probe of one question for `config` (abstract inputs) -> its memory analysis in bytes."""
    # the cache method runs the layers unrolled: per-layer weights (as the probe CLI's decode
    # loops pass them) are read in place, where XLA:CPU would copy each slice of stacked ones
    prepare = split_layers if method == "cache" else (lambda p: p)
    params = jax.eval_shape(lambda: prepare(init(config, jax.random.key(0))))
    i32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.int32)
    batch = ProbeBatch(context=i32(1, tokens), context_lengths=i32(1), cuts=i32(1, cuts), probe=i32(1, probe_len),
                       targets=jax.ShapeDtypeStruct((1, probe_len), jnp.bool_))
    fn = jax.jit(lambda p, b: answer_nll(p, b, config=config, method=method, cut_chunk=cut_chunk,
                                         context_chunk=context_chunk if method == "cache" else None).mean)
    t0 = time.perf_counter()
    m = fn.lower(params, batch).compile().memory_analysis()
    out = dict(arguments=m.argument_size_in_bytes, outputs=m.output_size_in_bytes, temp=m.temp_size_in_bytes,
               alias=m.alias_size_in_bytes)
    out["peak"] = out["arguments"] + out["outputs"] + out["temp"] - out["alias"]
    # XLA:CPU runs bf16 dots in float32 and, where the layers are scanned ("packed"), converts the
    # whole stacked layer weights to float32 up front: 2 x their bf16 bytes of temporaries that a
    # GPU / TPU program does not have (seen in the buffer assignment: wrapped_convert f32[L, ...]).
    layer_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params["layers"]))
    out["cpu_f32_weights"] = 2 * layer_bytes if method == "packed" and config.compute_dtype == "bfloat16" else 0
    out["compile_s"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="7b,32b")
    ap.add_argument("--impls", default="xla,chunked,pallas")
    ap.add_argument("--methods", default="cache,packed")
    ap.add_argument("--tokens", type=int, default=32768, help="context (question + trajectory) tokens")
    ap.add_argument("--cuts", type=int, default=64)
    ap.add_argument("--probe-len", type=int, default=32)
    ap.add_argument("--cut-chunk", type=int, default=16)
    ap.add_argument("--context-chunk", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=0, help="compile this many and twice as many layers, extend "
                                                          "linearly to the full depth (0: the full depth)")
    ap.add_argument("--json", default="", help="also write the rows here")
    args = ap.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        full = MODELS[name]
        for impl in args.impls.split(","):
            for method in args.methods.split(","):
                cfg = full.replace(attention_impl=impl, attention_chunk=1024)
                kw = dict(tokens=args.tokens, cuts=args.cuts, probe_len=args.probe_len, cut_chunk=args.cut_chunk,
                          context_chunk=args.context_chunk)
                if args.layers and args.layers < full.num_layers:
                    l = args.layers
                    a = measure(cfg.replace(num_layers=l), method, **kw)
                    b = measure(cfg.replace(num_layers=2 * l), method, **kw)
                    res = {k: a[k] + (full.num_layers - l) * (b[k] - a[k]) // l for k in ("arguments", "outputs",
                                                                                          "temp", "alias", "peak",
                                                                                          "cpu_f32_weights")}
                    res["compile_s"] = a["compile_s"] + b["compile_s"]
                    res["measured_layers"] = [l, 2 * l]
                else:
                    res = measure(cfg, method, **kw)
                    res["measured_layers"] = [full.num_layers]
                row = dict(model=name, impl=impl, method=method, **kw, **res)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| model | impl | method | params GiB | temporaries GiB | peak GiB | of which XLA:CPU f32 weight "
          "copies GiB | peak less them GiB | layers compiled |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['impl']} | {r['method']} | {r['arguments'] / GiB:.1f} | {r['temp'] / GiB:.1f} | "
              f"{r['peak'] / GiB:.1f} | {r['cpu_f32_weights'] / GiB:.1f} | "
              f"{(r['peak'] - r['cpu_f32_weights']) / GiB:.1f} | {'/'.join(map(str, r['measured_layers']))} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
