"""Hypothesis strategies shared by the tests.

Shapes come from small fixed sets, because every new shape recompiles; randomness comes
from integer seeds turned into keys inside the tests.
"""

import hypothesis.strategies as st


seeds = st.integers(min_value=0, max_value=2**32 - 1)

# (cin, h, w): odd and even sizes, non-square images, one and several channels.
image_shapes = st.sampled_from([(1, 4, 4), (2, 5, 6), (3, 6, 5), (2, 7, 7), (1, 8, 3)])

out_channels = st.sampled_from([1, 3])

# Kernel grids (cin, cout, h, wf) for sampling and EMA tests.
grid_shapes = st.sampled_from([(1, 1, 4, 3), (2, 3, 5, 4), (3, 2, 8, 5), (1, 4, 7, 4)])

parameterizations = st.sampled_from(["hw", "hw_cin", "hw_cout", "hw_cin_cout"])

rates = st.sampled_from([0.05, 0.1, 0.5, 1.0])

# Numbers of positions to sample: at most 12, the size of the smallest grid in
# `grid_shapes`, so that every count is also valid without replacement.
sample_counts = st.sampled_from([1, 6, 12])

# (cin, cout, h, w) of a layer: odd and even widths, one and several channels.
layer_sizes = st.sampled_from([(1, 1, 4, 4), (2, 3, 5, 6), (3, 2, 6, 5), (1, 4, 7, 7)])
