import os

import hypothesis
import jax


# Implicit rank promotion hides shape bugs; every array op in the suite must be explicit.
jax.config.update("jax_numpy_rank_promotion", "raise")

hypothesis.settings.register_profile("default", max_examples=10, deadline=None, print_blob=True)
hypothesis.settings.register_profile("ci", max_examples=60, deadline=None, print_blob=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
