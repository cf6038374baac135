-- The decision taken for the reviewer when an approval expires (approve or reject; reject when NULL).
ALTER TABLE approvals ADD COLUMN on_expiry TEXT;
CREATE INDEX approvals_expiring ON approvals (expires_at) WHERE status = 'pending' AND expires_at IS NOT NULL;
