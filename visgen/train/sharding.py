"""Device mesh and sharding rules.

The mesh has axes `data` (pure data parallelism) and `fsdp` (data parallelism
whose parameters, gradients and optimizer moments are sharded across it). The
batch is split over both axes. Parameters follow one rule, FSDP by size: an
array with at least `min_fsdp_size` elements is sharded along its largest
dimension divisible by the `fsdp` axis size; everything else is replicated.
"""

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1) -> Mesh:
    """A `(data, fsdp)` mesh over all devices; -1 on one axis takes the rest."""
    n = jax.device_count()
    if data == -1 and fsdp == -1:
        raise ValueError("at most one of mesh.data and mesh.fsdp may be -1")
    if data == -1:
        data = n // fsdp if fsdp > 0 and n % fsdp == 0 else 0
    if fsdp == -1:
        fsdp = n // data if data > 0 and n % data == 0 else 0
    if data * fsdp != n or data < 1 or fsdp < 1:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} does not cover the {n} devices")
    devices = np.asarray(jax.devices()).reshape(data, fsdp)
    return Mesh(devices, BATCH_AXES)


def make_local_mesh() -> Mesh:
    """A `(data, fsdp=1)` mesh over this process's devices only: for work that each
    process of a multi-process job does on its own (e.g. its share of the FID features);
    the same as `make_mesh(-1, 1)` in a one-process run."""
    return Mesh(np.asarray(jax.local_devices()).reshape(-1, 1), BATCH_AXES)


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_fsdp_size: int) -> PartitionSpec:
    """The partition spec of one parameter under the FSDP-by-size rule."""
    if fsdp_size == 1 or math.prod(shape) < min_fsdp_size:
        return PartitionSpec()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return PartitionSpec(*spec)
    return PartitionSpec()


def state_shardings(abstract_state, mesh: Mesh, min_fsdp_size: int = 2**14):
    """NamedShardings for every leaf of a pytree of `jax.ShapeDtypeStruct`s."""
    fsdp_size = mesh.shape["fsdp"]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, fsdp_spec(tuple(x.shape), fsdp_size, min_fsdp_size)),
        abstract_state,
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data` x `fsdp`; other axes replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Assemble per-process host batches into global arrays sharded over the batch axes."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
        if np.asarray(v).dtype.kind in "biuf"
    }
