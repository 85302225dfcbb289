"""Progressive delivery (issue 20): rollouts of Quarterdeck itself, with analysis and rollback."""
