"""Reading the original StepTool formats and tokenising step-grained examples."""
