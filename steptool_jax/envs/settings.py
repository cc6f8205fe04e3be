"""The built-in environment's settings: one section shared by training and evaluation.

`EnvSettings` says which tasks exist (how many, which templates, how the splits are drawn),
how an episode is played and rendered (step limit, prompt text), how the scripted expert
errs (for the generated training data), and how the rule judge shapes rewards. Training
(`env.*` of a run config: the expert data, the online rollouts) and evaluation (`env.*` of
an evaluation config, or the trained run's own) read the same section, so a policy is
evaluated on the splits and text it was trained with.

The chat template is not here: it is the model's (`data.template`), and the episode is
rendered in it (`episode_config(template)`).
"""

from __future__ import annotations

import dataclasses

from steptool_jax.config import schema
from steptool_jax.data.records import Trajectory
from steptool_jax.envs import episode as env
from steptool_jax.envs import judge as judging
from steptool_jax.envs.tasks import TEMPLATES, TEST_ENTITIES, Task, generate_tasks


@dataclasses.dataclass(frozen=True)
class EnvSettings:
  """Tasks, episodes, the expert's mistakes and the judge's rewards (`env.*`)."""

  num_tasks: int = 200  # tasks generated, split into train / validation / test
  seed: int = 0  # of the tasks, and of the expert's mistakes
  mistake_rate: float = 0.3  # the scripted expert's per-decision mistake probability (training data)
  max_steps: int = 10  # actions per episode, Finish included
  templates: str = ""  # comma-separated task templates ("" = all twelve)
  hold_out_templates: bool = True  # False: no template is kept for the test split only
  test_entities: str = "unseen"  # unseen: test holds out cities/currencies | seen: drawn like validation
  validation_fraction: float = 0.1
  test_fraction: float = 0.1
  quote_entities: bool = False  # cities and days in quotes in the queries (as in the JSON calls)
  tool_descriptions: bool = True  # False: the system prompt lists function signatures only
  thoughts: bool = True  # False: the expert writes no Thought lines
  contribution: str = "answer_overlap"  # answer_overlap | reference (envs.judge)
  contribution_threshold: float = 0.3  # answer_overlap: LCS coverage that counts as a Contribution
  alpha: float = 1.0  # step reward (alpha SuccCalling + Contribution) / (alpha + 1); the paper's 1
  # The final reward of an episode that never called Finish (step limit), on its last step:
  # 0 = Unsolved; < 0 makes not answering worse than a wrong answer (docs/results.md, run 4).
  unfinished_reward: float = 0.0

  def __post_init__(self):
    schema.positive("num_tasks", self.num_tasks)
    schema.seed("seed", self.seed)
    schema.number("mistake_rate", self.mistake_rate, low=0.0, high=1.0)
    schema.positive("max_steps", self.max_steps)
    unknown = sorted(set(self.template_names) - set(TEMPLATES))
    if unknown:
      raise schema.ConfigError("templates", f"unknown templates {unknown}; expected some of {sorted(TEMPLATES)}")
    schema.one_of("test_entities", self.test_entities, TEST_ENTITIES)
    schema.number("validation_fraction", self.validation_fraction, low=0.0, high=1.0, high_open=True)
    schema.number("test_fraction", self.test_fraction, low=0.0, high=1.0, high_open=True)
    if self.validation_fraction + self.test_fraction >= 1:
      raise schema.ConfigError("test_fraction", f"expected validation_fraction + test_fraction < 1 (train needs"
                                                f" tasks), found {self.validation_fraction} + {self.test_fraction}")
    schema.one_of("contribution", self.contribution, judging.CONTRIBUTIONS)
    schema.number("contribution_threshold", self.contribution_threshold, low=0.0, high=1.0)
    schema.positive("alpha", self.alpha, allow_zero=True)
    schema.number("unfinished_reward", self.unfinished_reward)

  @property
  def template_names(self) -> tuple[str, ...]:
    """`templates` as a tuple of names (empty: all of them)."""
    return tuple(name.strip() for name in self.templates.split(",") if name.strip())

  def tasks(self) -> dict[str, tuple[Task, ...]]:
    """Every split's tasks (deterministic in `seed`)."""
    return generate_tasks(self.num_tasks, self.seed, templates=self.template_names or None,
                          hold_out_templates=self.hold_out_templates, quote_entities=self.quote_entities,
                          test_entities=self.test_entities, validation_fraction=self.validation_fraction,
                          test_fraction=self.test_fraction)

  def episode_config(self, template: str) -> env.EnvConfig:
    """How an episode is played and rendered in the model's chat `template`."""
    return env.EnvConfig(max_steps=self.max_steps, template=template, tool_descriptions=self.tool_descriptions)

  def judge(self, task: Task, trajectory: Trajectory) -> judging.Judgement:
    """The rule judge's verdict and shaped step rewards, with these reward settings."""
    return judging.judge(task, trajectory, alpha=self.alpha, threshold=self.contribution_threshold,
                         contribution=self.contribution, unfinished_reward=self.unfinished_reward)
