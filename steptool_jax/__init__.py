"""steptool_jax: StepTool (step-grained RL for multi-step tool use) in JAX/Flax."""

__version__ = "0.1.0"
