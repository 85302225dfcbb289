"""Claude Code as a run's agent: the real CLI, headless in the run's sandbox."""
