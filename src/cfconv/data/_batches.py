"""Deterministic mini-batches on the device, prefetched by a background thread."""

import queue
import threading
from collections.abc import Callable, Iterator
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, UInt8

from .._errors import check_int
from ._dataset import Dataset


Batch = tuple[Float[Array, "batch channels height width"], Int[Array, " batch"]]

_POLL_SECONDS = 0.05


@jax.jit
def _to_float(
    images: UInt8[Array, "batch height width channels"],
) -> Float[Array, "batch channels height width"]:
    # On the device: the transfer moves uint8 (4x fewer bytes than float32), and XLA
    # transposes and converts faster than numpy does on the host.
    return jnp.transpose(images, (0, 3, 1, 2)).astype(jnp.float32) / 255.0


def num_batches(dataset: Dataset, batch_size: int, drop_remainder: bool = True) -> int:
    """The number of batches that [`cfconv.data.batches`][] yields per epoch.

    **Arguments:**

    - `dataset`: a [`cfconv.data.Dataset`][].
    - `batch_size`: the number of examples per batch.
    - `drop_remainder`: whether a last, smaller batch is left out.

    **Returns:**

    `len(dataset) // batch_size`, plus one for a partial last batch unless
    `drop_remainder`.
    """
    batch_size = check_int("batch_size", batch_size)
    size = len(dataset)
    if drop_remainder:
        if batch_size > size:
            raise ValueError(
                f"`batch_size` must be at most the data set size {size} when "
                f"`drop_remainder=True`, got {batch_size}"
            )
        return size // batch_size
    return -(-size // batch_size)


def batches(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    drop_remainder: bool = True,
    prefetch: int = 2,
) -> Iterator[Batch]:
    """Iterate over one epoch of a data set in batches placed on the default device.

    The order is a deterministic function of `(seed, epoch)`: with `shuffle=True` it is
    `np.random.default_rng((seed, epoch)).permutation(len(dataset))`, so a run resumed at
    epoch `k` sees exactly the batches an uninterrupted run would.

    Each batch moves to the device as `uint8` and is converted there to `float32` in
    `[0, 1]`, channels first. With `prefetch > 0` a background thread prepares up to
    `prefetch` batches ahead, so the next batch is ready while the current step runs.
    The thread ends when the epoch does, when the iterator is closed (`.close()`, a
    `break` out of a `for` loop over a generator that is then dropped) or garbage
    collected; an exception in it is raised again in the consumer.

    **Arguments:**

    - `dataset`: a [`cfconv.data.Dataset`][].
    - `batch_size`: the number of examples per batch.
    - `shuffle`: whether to visit the examples in a random order.
    - `seed`, `epoch`: non-negative integers that fix the order when shuffling.
    - `drop_remainder`: whether to leave out a last, smaller batch.
    - `prefetch`: how many batches to prepare ahead in a background thread; 0 for no
        thread.

    **Returns:**

    An iterator of [`cfconv.data.num_batches`][] pairs `(images, labels)`: `float32`
    images of shape `(batch, channels, height, width)` in `[0, 1]` and `int32` labels of
    shape `(batch,)`.

    !!! example

        ```python
        for epoch in range(num_epochs):
            for x, y in cfconv.data.batches(train, 32, shuffle=True, epoch=epoch):
                model, opt_state = step(model, opt_state, x, y)
        ```
    """
    count = num_batches(dataset, batch_size, drop_remainder)
    if not isinstance(shuffle, bool):
        raise TypeError(f"`shuffle` must be a bool, got {shuffle!r}")
    seed = check_int("seed", seed, minimum=0)
    epoch = check_int("epoch", epoch, minimum=0)
    prefetch = check_int("prefetch", prefetch, minimum=0)
    if shuffle:
        order = np.random.default_rng((seed, epoch)).permutation(len(dataset))
    else:
        order = np.arange(len(dataset))

    def load(index: int) -> Batch:
        chosen = order[index * batch_size : (index + 1) * batch_size]
        images = _to_float(jax.device_put(dataset.images[chosen]))
        labels = jax.device_put(dataset.labels[chosen])
        return images, labels

    if prefetch == 0:
        return (load(index) for index in range(count))
    return _prefetched(load, count, prefetch)


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


def _prefetched(load: Callable[[int], Batch], count: int, depth: int) -> Iterator[Batch]:
    """Yield `load(0), ..., load(count - 1)`, computed up to `depth` ahead in a thread."""
    buffer: queue.Queue[object] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        # A bounded wait, so that the thread notices `stop` when nobody consumes.
        while not stop.is_set():
            try:
                buffer.put(item, timeout=_POLL_SECONDS)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        # The thread holds no reference to the generator, so dropping the generator
        # runs its `finally`, which stops the thread.
        try:
            for index in range(count):
                if stop.is_set() or not put(load(index)):
                    return
        except BaseException as error:  # re-raised in the consumer
            put(_Raised(error))
            return
        put(_END)

    thread = threading.Thread(target=produce, name="cfconv.data.batches", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield cast(Batch, item)
    finally:
        stop.set()
        if thread is not threading.current_thread():
            thread.join()
