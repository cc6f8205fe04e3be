"""Pure RL math over [batch, time] arrays: KL penalties, GAE, PPO losses."""
