"""`python -m vaemotion_jax.embedded.synth --out DIR ...`: writes a world folder."""
import sys

from vaemotion_jax.embedded.synth.build import main

sys.exit(main())
