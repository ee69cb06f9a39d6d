"""The fast inference runtime behind `Encoder.encode`."""

# `encode` is worth compiling from this many texts on: below, start-up outweighs the gain.
COMPILE_FROM = 20_000
