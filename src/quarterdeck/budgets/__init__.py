"""Tenant budgets: daily and monthly USD limits, checked against a worst-case estimate before
every provider call so a tenant stops before the call that would cross the line."""
