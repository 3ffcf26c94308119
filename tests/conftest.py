"""Test set-up before jax is imported: 8 fake CPU devices (for pmap / sharding tests), and XLA:CPU's
backend (LLVM) optimisation level 0. Most tests are bound by compiling many small programs, not by
running them; level 0 changes no HLO pass and keeps IEEE semantics (no fast math), and compiles
get much cheaper (a compile-bound test: 29.2 -> 17.5 CPU-s). Every reference comparison of the
suite passes either way; METAREASON_TEST_XLA_OPT=1 tests with the default optimisation."""

import os

_flags = " --xla_force_host_platform_device_count=8"
if os.environ.get("METAREASON_TEST_XLA_OPT") != "1":
    _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + _flags).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
