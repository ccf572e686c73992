r"""All tensors of a parameter tree in one blocked buffer, with per-tensor reductions.

A per-parameter optimizer written tensor by tensor makes XLA emit a few fused kernels
per tensor for every per-tensor reduction and elementwise expression, and on CPU each
kernel is compiled on its own (about 10 ms): compile time grows with the number of
tensors. `FlatLayout` lays the tensors end to end in one (num_blocks, BLOCK) array,
each tensor padded with zeros to whole blocks, so that the elementwise work is one
program over all entries and a per-tensor reduction is

    Σ_{x ∈ tensor i} x = Σ_{b : owner(b) = i} Σ_j x[b, j]

a sum over each block's row followed by a segment sum over the (few) blocks: no
gather or scatter over the entries themselves. Padding entries hold zeros; a
computation over the buffer must keep them out of sums or keep them zero (a zero
gradient, parameter and statistic make every feature of `MLPLOpt` zero there).

The layout depends on the shapes only: it is built at trace time, and its index
arrays are program constants.

`TensorLayout` is the same interface for one tensor in its own shape: an update written
once against the interface runs either on all tensors at once (`FlatLayout`, fast to
compile) or tensor by tensor (`TensorLayout`: every operation elementwise or a
reduction over the tensor, so a tensor sharded over devices stays sharded: no entry is
gathered).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

BLOCK = 128  # entries per block: a tensor wastes < BLOCK entries of padding


@dataclasses.dataclass(frozen=True)
class FlatLayout:
    """Where each tensor of a list of shapes lives in a (num_blocks, BLOCK) buffer.

    Attributes:
      shapes: the tensors' shapes (all of size > 0).
      offsets: the first block of each tensor.
      num_blocks: the buffer's rows.
      block_owner: (num_blocks,) int32, the tensor each block belongs to.
    """

    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    num_blocks: int
    block_owner: np.ndarray = dataclasses.field(compare=False, repr=False)

    @classmethod
    def of(cls, shapes: Sequence[Sequence[int]]) -> FlatLayout:
        shapes = tuple(tuple(int(d) for d in s) for s in shapes)
        if any(math.prod(s) == 0 for s in shapes):
            raise ValueError(f"FlatLayout holds tensors of size > 0 only, got shapes {shapes}")
        blocks = [-(-math.prod(s) // BLOCK) for s in shapes]
        offsets = tuple(int(o) for o in np.cumsum([0, *blocks])[:-1])
        owner = np.repeat(np.arange(len(shapes), dtype=np.int32), blocks)
        return cls(shapes, offsets, int(sum(blocks)), owner)

    @property
    def num_tensors(self) -> int:
        return len(self.shapes)

    entry_ndim = 2  # an entry's place in the buffer: (block, position in the block)

    def sizes(self) -> np.ndarray:
        """(num_tensors,) float32: the tensors' entry counts (padding excluded)."""
        return np.array([math.prod(s) for s in self.shapes], np.float32)

    def flatten(self, tensors: Sequence[jax.Array], lead: int = 0) -> jax.Array:
        """The tensors (each of shape lead_dims + shape) as one (*lead_dims, num_blocks,
        BLOCK) float32 buffer, zero-padded."""
        lead_dims = tuple(tensors[0].shape[:lead]) if tensors else ()
        blocks = []
        for x, shape in zip(tensors, self.shapes, strict=True):
            if tuple(x.shape) != (*lead_dims, *shape):
                raise ValueError(
                    f"FlatLayout.flatten: a tensor of shape {x.shape} where "
                    f"{lead_dims} + {shape} was laid out"
                )
            x = jnp.reshape(x.astype(jnp.float32), (*lead_dims, -1))
            pad = -x.shape[-1] % BLOCK
            if pad:
                x = jnp.concatenate([x, jnp.zeros((*lead_dims, pad), jnp.float32)], axis=-1)
            blocks.append(x.reshape(*lead_dims, -1, BLOCK))
        # joined along the block axis: a consumer that XLA fuses the joining into picks
        # its operand once per row of BLOCK entries (joined as one long vector and then
        # reshaped, the choice is made entry by entry: several times slower on CPU)
        return jnp.concatenate(blocks, axis=-2)

    def unflatten(self, flat: jax.Array, lead: int = 0) -> list[jax.Array]:
        """The inverse of `flatten`: each tensor's entries, in its shape."""
        lead_dims = flat.shape[:lead]
        rows = flat.reshape(*lead_dims, self.num_blocks * BLOCK)
        out = []
        for shape, first_block in zip(self.shapes, self.offsets, strict=True):
            start = first_block * BLOCK
            x = rows[..., start : start + math.prod(shape)]
            out.append(x.reshape(*lead_dims, *shape))
        return out

    def tensor_sum(self, flat: jax.Array) -> jax.Array:
        """Σ over each tensor's entries: (*lead, num_blocks, BLOCK) → (*lead, num_tensors)."""
        return self._blocks_to_tensors(jnp.sum(flat, axis=-1))

    def tensor_sums(self, flats: Sequence[jax.Array]) -> jax.Array:
        """Σ over each tensor's entries of several (num_blocks, BLOCK) buffers at once:
        (len(flats), num_tensors); one row sum each and one segment sum for all."""
        return self._blocks_to_tensors(jnp.stack([jnp.sum(x, axis=-1) for x in flats]))

    def _blocks_to_tensors(self, block_sums: jax.Array) -> jax.Array:
        """Per-block sums (*lead, num_blocks) → per-tensor sums (*lead, num_tensors)."""
        moved = jnp.moveaxis(block_sums, -1, 0)
        sums = jax.ops.segment_sum(
            moved, self.block_owner, self.num_tensors, indices_are_sorted=True
        )
        return jnp.moveaxis(sums, 0, -1)

    def valid(self) -> jax.Array:
        """(num_blocks, BLOCK) bool: True at the tensors' entries, False at the padding."""
        counts = np.full(self.num_blocks, BLOCK, np.int32)
        for shape, first in zip(self.shapes, self.offsets, strict=True):
            n = math.prod(shape)
            last = first + -(-n // BLOCK) - 1
            counts[last] = n - (last - first) * BLOCK
        column = jax.lax.broadcasted_iota(jnp.int32, (self.num_blocks, BLOCK), 1)
        return column < jnp.asarray(counts)[:, None]

    def tensor_mean(self, flat: jax.Array) -> jax.Array:
        """The mean over each tensor's entries (padding excluded): (*lead, num_tensors)."""
        sums = self.tensor_sum(flat)
        return sums / jnp.broadcast_to(self.sizes(), sums.shape)

    def per_entry(self, per_tensor: jax.Array) -> jax.Array:
        """A per-tensor value (*lead, num_tensors) broadcast to (*lead, num_blocks, 1)."""
        return jnp.take(per_tensor, self.block_owner, axis=-1)[..., None]


@dataclasses.dataclass(frozen=True)
class TensorLayout:
    """One tensor of `shape`, kept in that shape, behind `FlatLayout`'s interface: the
    buffer is the tensor itself, a per-tensor value has one entry (*lead, 1)."""

    shape: tuple[int, ...]
    num_tensors = 1

    @property
    def entry_ndim(self) -> int:
        return len(self.shape)

    def flatten(self, tensors: Sequence[jax.Array], lead: int = 0) -> jax.Array:
        (x,) = tensors
        if tuple(x.shape[lead:]) != tuple(self.shape):
            raise ValueError(
                f"TensorLayout.flatten: a tensor of shape {x.shape} where {self.shape} was laid out"
            )
        return x.astype(jnp.float32)

    def unflatten(self, flat: jax.Array, lead: int = 0) -> list[jax.Array]:
        return [flat]

    def tensor_sum(self, flat: jax.Array) -> jax.Array:
        axes = tuple(range(flat.ndim - len(self.shape), flat.ndim))
        return jnp.sum(flat, axis=axes)[..., None]

    def tensor_mean(self, flat: jax.Array) -> jax.Array:
        return self.tensor_sum(flat) / math.prod(self.shape)

    def per_entry(self, per_tensor: jax.Array) -> jax.Array:
        """(*lead, 1) → (*lead, 1, …, 1), broadcasting against the tensor."""
        return per_tensor.reshape(per_tensor.shape[:-1] + (1,) * len(self.shape))
