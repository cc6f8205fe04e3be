"""Typed configuration: one frozen dataclass per section, the ConfigDict generated from them.

    from steptool_jax.config.run import RunConfig, base_config, parse_run_config   # training
    from steptool_jax.config.evaluation import EvalConfig, parse_eval_config       # evaluation
    from steptool_jax.config import schema                                          # the machinery

(Nothing is imported here, so that sections elsewhere, e.g. `envs.settings.EnvSettings`, can use
`config.schema` without a cycle.)
"""
