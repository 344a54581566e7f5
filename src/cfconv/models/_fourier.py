"""A discretely parameterized Fourier-domain CNN: the reference without generators."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, Real

from .._errors import check_shape
from .._spectral import spectral_conv
from .._state import KernelState, kernel_shape
from .._strategies import AbstractStrategy
from ._base import (
    AbstractModel,
    Head,
    Logits,
    StepKernel,
    check_image,
    check_sizes,
    num_outputs_for,
)
from ._init import default_state_scale


class FourierCNN(AbstractModel):
    r"""The CF-Conv network with every Fourier kernel entry a parameter (no MLP).

    This is the "discrete" Fourier-domain learning of the paper's Section 3: the same
    layers as [`cfconv.models.CFConvNet`][] (spectral convolution, bias, ReLU in the
    spatial domain, global average pooling, the head), but each layer's kernel
    $K \in \mathbb{C}^{C_{in} \times C_{out} \times H \times (W/2+1)}$ is learned directly,
    as separate real and imaginary arrays. Its parameter count grows with the image size
    ($116$M at the paper's $150 \times 150$ with 32 filters), which is what continuous
    kernels avoid; on small images it is the reference that tells how well the
    architecture itself can do, independently of any kernel generator.

    It is built for one image size. It has no stored kernels, so every strategy gives
    the same kernels (the parameters); it shares the two-phase interface so that one
    training loop serves every model. The initial kernels are uniform in $[-s, s]$ with
    the CF-Conv nets' default $s$ ([`cfconv.models.default_state_scale`][]).
    """

    real: tuple[Float[Array, "_cin _cout h wf"], ...]
    imag: tuple[Float[Array, "_cin _cout h wf"], ...]
    biases: tuple[Float[Array, " _cout"], ...]
    head: Head
    image_size: tuple[int, int] = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    num_outputs: int = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        width: int = 32,
        depth: int = 6,
        head: Sequence[int] = (128, 64),
        *,
        image_size: tuple[int, int],
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`, `num_classes`, `width`, `depth`, `head`: as for
          [`cfconv.models.CFConvNet`][].
        - `image_size`: `(h, w)`, the size of the images (the kernels' grid).
        - `key`: a PRNG key.
        """
        check_sizes(in_channels, num_classes, width, depth)
        h, w = check_shape("image_size", image_size, rank=2)
        channels = [in_channels] + [width] * depth
        keys = jax.random.split(key, 2 * depth + 1)
        real, imag = [], []
        for n, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
            shape = kernel_shape(cin, cout, h, w)
            s = default_state_scale(cin)
            real.append(jax.random.uniform(keys[2 * n], shape, minval=-s, maxval=s))
            imag.append(jax.random.uniform(keys[2 * n + 1], shape, minval=-s, maxval=s))
        self.real, self.imag = tuple(real), tuple(imag)
        self.biases = tuple(jnp.zeros((cout,)) for cout in channels[1:])
        self.image_size = (h, w)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_outputs = num_outputs_for(num_classes)
        self.head = Head(width, head, self.num_outputs, key=keys[-1])

    def init_states(
        self, image_size: tuple[int, int], *, key: PRNGKeyArray
    ) -> tuple[KernelState, ...]:
        """No stored kernels: `()`."""
        del key
        self._check_size(image_size)
        return ()

    def kernels(
        self,
        states: tuple[KernelState, ...],
        image_size: tuple[int, int],
        strategy: AbstractStrategy | str,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[tuple[StepKernel, ...], tuple[KernelState, ...]]:
        """Phase 1: the parameters as complex kernels, whatever the strategy."""
        del strategy, key
        self._check_size(image_size)
        kernels = tuple(jax.lax.complex(r, i) for r, i in zip(self.real, self.imag))
        return kernels, states

    def __call__(self, x: Real[Array, "cin h w"], kernels: tuple[StepKernel, ...]) -> Logits:
        """Phase 2: the logits for one example."""
        check_image(x, self.in_channels)
        if len(kernels) != len(self.real):
            raise ValueError(
                f"`kernels` must hold one kernel per layer ({len(self.real)}), got {len(kernels)}"
            )
        for kernel, bias in zip(kernels, self.biases):
            x = jax.nn.relu(spectral_conv(x, kernel) + bias[:, None, None])
        return self.head(x)

    def _check_size(self, image_size) -> None:
        if tuple(image_size) != self.image_size:
            raise ValueError(
                f"`image_size` must be the size this model was built for, "
                f"{self.image_size}, got {tuple(image_size)}"
            )


def fourier_parameter_count(
    in_channels: int, width: int, depth: int, image_size: tuple[int, int]
) -> int:
    """The kernel parameters of a [`FourierCNN`][cfconv.models.FourierCNN] (real and
    imaginary parts), without biases and head."""
    h, w = image_size
    per_pair = 2 * h * (w // 2 + 1)
    return per_pair * (in_channels * width + (depth - 1) * width * width)
