-- API keys (security/auth). Written by the auth work.
SELECT 1;
