"""A device check for a new machine or pod slice: `python -m metareason.parallel.check`.

Starts `jax.distributed` when there are several hosts (METAREASON_COORDINATOR /
METAREASON_NUM_PROCESSES / METAREASON_PROCESS_ID, or a Cloud TPU pod slice with --distributed),
prints what each process sees, then sums a sharded array over every device of every host on a
data-parallel mesh and checks the result. Exit status 0 if all is well, 1 with a one-line
reason otherwise. `tpu_setup.sh` runs it on every host.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m metareason.parallel.check", description=__doc__.splitlines()[0])
    ap.add_argument("--distributed", action="store_true",
                    help="start jax.distributed even without METAREASON_* variables (auto-detected on TPU pods, SLURM)")
    ap.add_argument("--expect-platform", default="", help="fail unless the devices are of this platform (tpu, gpu, cpu)")
    args = ap.parse_args(argv)

    from metareason.parallel.mesh import MeshConfig, initialize_distributed, make_mesh

    if args.distributed or "METAREASON_COORDINATOR" in os.environ:
        initialize_distributed()
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    devices = jax.devices()
    pid, n = jax.process_index(), jax.process_count()
    print(f"process {pid} of {n}: {jax.local_device_count()} local / {len(devices)} devices, "
          f"{devices[0].platform} ({devices[0].device_kind})", flush=True)
    if args.expect_platform and devices[0].platform != args.expect_platform:
        print(f"check failed: expected {args.expect_platform} devices, found {devices[0].platform}", file=sys.stderr)
        return 1
    mesh = make_mesh(MeshConfig(), devices)
    sharding = NamedSharding(mesh, P("data"))
    # device i holds the value i + 1: the total checks every device took part exactly once
    ones = jax.make_array_from_callback((len(devices),), sharding,
                                        lambda idx: np.arange(len(devices), dtype=np.float32)[idx] + 1)
    total = float(jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(ones))
    want = len(devices) * (len(devices) + 1) / 2
    if total != want:
        print(f"check failed: the sum over {len(devices)} devices is {total}, expected {want}", file=sys.stderr)
        return 1
    if pid == 0:
        print(f"ok: {len(devices)} devices on {n} host(s) reduce correctly", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
