-- Which ollabridge process runs an in-flight request ('host/address/random'): replicas
-- share this table, and each closes only the rows it knows to be abandoned: those of
-- an earlier process on its own host and address, and any older than an hour
-- (see src/store/db.rs).
ALTER TABLE logs ADD COLUMN instance TEXT;
