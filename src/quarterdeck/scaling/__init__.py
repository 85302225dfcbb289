"""Autoscaling decisions for Quarterdeck's worker pool (issue 19).

Why a package of its own: the scaling policies are pure decision logic — an observation and its
time go in, a :class:`~quarterdeck.scaling.policy.Decision` comes out — so they can be unit-tested
with explicit times and replayed against traces in a simulator, with no cluster, no clock and no
I/O.  ``policy`` holds the shared interface and helpers; ``quarterdeck_policy`` holds Quarterdeck's
own policy; ``guide_policies`` reproduces the two policies of the reference guide, faithfully and
including their mistakes, so the comparison is honest.
"""
