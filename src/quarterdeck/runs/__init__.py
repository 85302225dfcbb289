"""Durable agent runs: submission, the job-engine worker, checkpoints and the event timeline."""
