"""Step-grained reward shaping: annotators and reward placement on tokens."""
