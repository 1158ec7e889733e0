-- Ledger entries of kind 'waive': the part of a job's actual cost above the
-- credits held for it. The hold is the most a job costs, so the excess is not
-- charged, but it is recorded instead of being dropped silently.

ALTER TABLE credit_ledger DROP CONSTRAINT credit_ledger_kind_check;
ALTER TABLE credit_ledger ADD CONSTRAINT credit_ledger_kind_check
    CHECK (kind IN ('grant', 'reserve', 'capture', 'release', 'waive'));
