-- Audit log (security/audit). Written by the audit work.
SELECT 1;
