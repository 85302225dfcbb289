"""Budgets: daily and monthly USD limits per tenant and per key, and a total per run.

Gateway calls reserve their worst case against every limit that applies before they start
(:mod:`.holds`), so concurrent calls cannot pass a limit; runs check the worst case of their next
call against what is left (:class:`.service.BudgetService`).
"""
