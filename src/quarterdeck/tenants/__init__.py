"""A tenant's data as a whole: erasure (GDPR Art. 17) and retention of run data, and the
scheduled upkeep that enforces retention (run-data purge, audit purge, full audit verification).

It sits on its own floor above ``runs``, ``approvals``, ``gateway``, ``incidents``, ``security``
and ``agents`` because erasing a tenant touches all of them; each keeps its own SQL, this folder
only decides what goes, in which order, and audits it.
"""
