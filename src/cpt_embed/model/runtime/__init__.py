"""The fast inference runtime behind `Encoder.encode`, and the only place that touches
private torch and transformers APIs.

attention.py: the CPU attention kernel and ragged rows; bert.py: a BERT's CPU copy made
from its weights file alone; packing.py: linear layers on
weights pre-packed for oneDNN; copy.py: the backbone cast once to the compute dtype;
probes.py: the copy's probe results kept on disk; imports.py: transformers imported lean;
compiler.py: the torch.compile'd backbone; devices.py: dtypes and devices; batching.py:
length-sorted batches and the loop that runs them.
"""

# `encode` is worth compiling from this many texts on: below, start-up outweighs the gain.
COMPILE_FROM = 20_000
