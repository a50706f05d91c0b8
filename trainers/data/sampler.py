"""Resumable, deterministic minibatch sampler for in-memory tensors."""

from __future__ import annotations

from typing import Any

import torch


class BatchSampler:
    """Yields minibatch index tensors, epoch by epoch, from a private `torch.Generator`.

    Why private: the global RNG is also consumed by model init and by perturbation-based
    gradient estimators, so sharing it would make the batch order depend on the estimator.
    Each epoch is a fresh permutation cut into full batches; a remainder shorter than
    `batch_size` is dropped so every step sees the same batch size (zeroth-order estimators'
    variance depends on it). `batch_size` larger than the dataset is clamped to it.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int) -> None:
        if num_examples <= 0 or batch_size <= 0:
            raise ValueError(
                f"BatchSampler needs num_examples > 0 and batch_size > 0, got "
                f"{num_examples} and {batch_size}"
            )
        self.num_examples = int(num_examples)
        self.batch_size = min(int(batch_size), self.num_examples)
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)
        self._epoch = -1  # no permutation drawn yet
        self._pos = 0
        self._perm = torch.empty(0, dtype=torch.int64)
        # Generator state *before* the current permutation: enough to rebuild it on resume.
        self._epoch_state = self._generator.get_state()

    @property
    def batches_per_epoch(self) -> int:
        """Full batches per epoch (the last partial batch is dropped)."""
        return self.num_examples // self.batch_size

    @property
    def epoch(self) -> int:
        """Index of the epoch the most recent batch came from (-1 before the first draw)."""
        return self._epoch

    def _new_epoch(self) -> None:
        self._epoch_state = self._generator.get_state()
        self._perm = torch.randperm(self.num_examples, generator=self._generator)
        self._epoch += 1
        self._pos = 0

    def next_indices(self) -> torch.Tensor:
        """Indices (int64, shape [batch_size]) of the next minibatch."""
        if self._epoch < 0 or self._pos + self.batch_size > self.num_examples:
            self._new_epoch()
        batch = self._perm[self._pos : self._pos + self.batch_size].clone()
        self._pos += self.batch_size
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the exact same batch sequence after a restart."""
        return {
            "num_examples": self.num_examples,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "epoch": self._epoch,
            "pos": self._pos,
            "epoch_generator_state": self._epoch_state.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`; refuses a state from a differently-shaped sampler."""
        for key in ("num_examples", "batch_size"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"BatchSampler state has {key}={state[key]} but this sampler "
                    f"has {getattr(self, key)}"
                )
        self.seed = int(state["seed"])
        gen_state = torch.as_tensor(state["epoch_generator_state"], dtype=torch.uint8)
        self._generator = torch.Generator()
        self._generator.set_state(gen_state.clone())
        self._epoch_state = gen_state.clone()
        self._epoch = int(state["epoch"])
        self._pos = int(state["pos"])
        if self._epoch >= 0:
            # Redraw the current epoch's permutation; this also advances the generator to
            # exactly where it was when the state was saved.
            self._perm = torch.randperm(self.num_examples, generator=self._generator)
        else:
            self._perm = torch.empty(0, dtype=torch.int64)
