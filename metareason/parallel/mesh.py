"""Device meshes from a config, and the multi-host start-up (`jax.distributed`).

A mesh has three named axes (see `AXES`):

- "data": pure data parallelism (params replicated, batch split);
- "fsdp": data parallelism with params, gradients and optimizer state split too (ZeRO-3);
- "tensor": tensor parallelism (heads, MLP columns and the vocabulary split; Megatron layout).

`MeshConfig` gives each axis's size within a host or slice (ICI, the fast interconnect) and across
hosts or slices (DCN); -1 on one axis means "all devices not used by the others". The device
order comes from `jax.experimental.mesh_utils`, which knows the TPU topology, so neighbouring
devices of an axis are physical neighbours.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from typing import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

__all__ = ["AXES", "MeshConfig", "MeshError", "make_mesh", "initialize_distributed"]

AXES = ("data", "fsdp", "tensor")


class MeshError(ValueError):
    """A mesh config that does not fit the devices at hand (one line, names the sizes)."""


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Axis sizes of the device mesh. The mesh's size along an axis is `axis * dcn_axis`.

    Within a host / slice (ICI): `data`, `fsdp`, `tensor`; one of them may be -1 (the rest).
    Across hosts / slices (DCN): `dcn_data`, `dcn_fsdp`, `dcn_tensor` (all 1 on one host;
    their product must equal the number of slices, or of processes on GPUs and CPUs).
    The default puts every device on `data`."""

    data: int = -1
    """Data-parallel devices per host (-1: every device not used by fsdp and tensor)."""
    fsdp: int = 1
    """Devices per host that split params, gradients and optimizer state (ZeRO-3)."""
    tensor: int = 1
    """Tensor-parallel devices per host (heads, MLP and vocabulary split)."""
    dcn_data: int = 1
    """Data-parallel replicas across hosts / slices."""
    dcn_fsdp: int = 1
    """FSDP groups across hosts / slices."""
    dcn_tensor: int = 1
    """Tensor-parallel groups across hosts / slices (rarely useful: DCN is slow)."""

    def __post_init__(self):
        ici = (self.data, self.fsdp, self.tensor)
        if sum(v == -1 for v in ici) > 1:
            raise MeshError(f"at most one of data, fsdp, tensor may be -1, got {ici}")
        for name in ("data", "fsdp", "tensor", "dcn_data", "dcn_fsdp", "dcn_tensor"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or (v <= 0 and not (v == -1 and not name.startswith("dcn"))):
                raise MeshError(f"mesh axis {name} must be a positive int{' or -1' if not name.startswith('dcn') else ''}, got {v!r}")

    @classmethod
    def parse(cls, text: str) -> "MeshConfig":
        """From "DATAxFSDPxTENSOR" or "DATAxFSDPxTENSOR/DCN_DATAxDCN_FSDPxDCN_TENSOR", e.g.
        "-1x1x1" (all data parallel), "1x-1x2" (FSDP with tensor pairs), "1x8x1/4x1x1" (FSDP
        on each 8-device host, 4 hosts data parallel)."""
        parts = text.strip().split("/")
        try:
            sizes = [tuple(int(v) for v in p.split("x")) for p in parts]
        except ValueError:
            sizes = []
        if len(parts) > 2 or any(len(v) != 3 for v in sizes) or not sizes:
            raise MeshError(f"mesh {text!r}: expected DATAxFSDPxTENSOR[/DCN_DATAxDCN_FSDPxDCN_TENSOR], "
                            "e.g. '1x-1x2' or '1x8x1/2x1x1'")
        dcn = sizes[1] if len(sizes) == 2 else (1, 1, 1)
        return cls(*sizes[0], *dcn)

    @property
    def dcn_shape(self) -> tuple[int, int, int]:
        return self.dcn_data, self.dcn_fsdp, self.dcn_tensor

    def ici_shape(self, devices_per_granule: int) -> tuple[int, int, int]:
        """The per-host / per-slice shape with -1 resolved against `devices_per_granule`."""
        ici = [self.data, self.fsdp, self.tensor]
        known = math.prod(v for v in ici if v != -1)
        if -1 in ici:
            if devices_per_granule % known:
                raise MeshError(f"mesh: {devices_per_granule} devices per host are not divisible by "
                                f"the fixed axis sizes (product {known}) of {tuple(ici)}")
            ici[ici.index(-1)] = devices_per_granule // known
        if math.prod(ici) != devices_per_granule:
            raise MeshError(f"mesh: axis sizes {tuple(ici)} use {math.prod(ici)} devices per host, "
                            f"but there are {devices_per_granule}")
        return tuple(ici)

    def shape(self, num_devices: int) -> dict[str, int]:
        """{axis: size} of the whole mesh for `num_devices` devices in all."""
        dcn = math.prod(self.dcn_shape)
        if num_devices % dcn:
            raise MeshError(f"mesh: {num_devices} devices cannot form {dcn} groups across hosts {self.dcn_shape}")
        ici = self.ici_shape(num_devices // dcn)
        return {a: i * d for a, i, d in zip(AXES, ici, self.dcn_shape)}


def make_mesh(config: MeshConfig | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The `jax.sharding.Mesh` with axes ("data", "fsdp", "tensor") for `config` (default: every
    device on "data") over `devices` (default: all devices of all processes).

    Axes are `AxisType.Auto`: the compiler propagates shardings from the inputs and from the
    constraints `metareason.parallel.constrain` places inside the model."""
    config = config or MeshConfig()
    devices = list(jax.devices() if devices is None else devices)
    dcn = config.dcn_shape
    types = (AxisType.Auto,) * len(AXES)
    if math.prod(dcn) == 1:
        ici = config.ici_shape(len(devices))
        try:
            grid = mesh_utils.create_device_mesh(ici, devices)
        except (ValueError, NotImplementedError, AssertionError) as err:  # topologies mesh_utils does not know
            warnings.warn(f"make_mesh: mesh_utils cannot lay out {ici} on these devices ({err}); using the "
                          "devices in order, which may not follow the interconnect", stacklevel=2)
            grid = np.asarray(devices).reshape(ici)
        return Mesh(grid, AXES, axis_types=types)
    granules = math.prod(dcn)
    if len(devices) % granules:
        raise MeshError(f"mesh: {len(devices)} devices cannot form {granules} groups across hosts {dcn}")
    slices = {getattr(d, "slice_index", 0) for d in devices}
    processes = {d.process_index for d in devices}
    if granules not in (len(slices), len(processes)):
        raise MeshError(f"mesh: the across-hosts part {dcn} needs {granules} slices or processes, found "
                        f"{len(slices)} slice(s) and {len(processes)} process(es) (start every host with "
                        "initialize_distributed, or drop the /... part on one host)")
    ici = config.ici_shape(len(devices) // granules)
    # the groups across the slow network: TPU slices where there are several, else processes
    per_process = len(slices) < granules
    grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, process_is_granule=per_process)
    return Mesh(grid, AXES, axis_types=types)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, local_device_ids: Sequence[int] | None = None) -> None:
    """Starts JAX's multi-process runtime once per process, before any other JAX call.

    On Cloud TPU VMs and SLURM / Open MPI clusters the arguments are detected from the
    environment (call it with none). Elsewhere give all three, e.g. two processes on one machine:
    `initialize_distributed("localhost:12355", 2, 0)` and `(..., 2, 1)`. The environment
    variables METAREASON_COORDINATOR, METAREASON_NUM_PROCESSES, METAREASON_PROCESS_ID fill
    missing arguments. A second call in the same process does nothing. On CPU devices the
    cross-process collectives use gloo."""
    if jax.distributed.is_initialized():
        return
    env = os.environ
    coordinator_address = coordinator_address or env.get("METAREASON_COORDINATOR")
    if num_processes is None and "METAREASON_NUM_PROCESSES" in env:
        num_processes = int(env["METAREASON_NUM_PROCESSES"])
    if process_id is None and "METAREASON_PROCESS_ID" in env:
        process_id = int(env["METAREASON_PROCESS_ID"])
    given = [coordinator_address is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise MeshError("initialize_distributed: give coordinator_address, num_processes and process_id "
                        "together (or none of them, to detect them from a TPU / SLURM environment)")
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise MeshError(f"initialize_distributed: process_id {process_id} is not in [0, {num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids)
