-- Which ollabridge process runs an in-flight request ('host/address/random'): with
-- PostgreSQL, replicas share the table, and each closes only the rows it knows to be
-- abandoned (see src/store/db.rs). SQLite keeps it for the same columns in both.
ALTER TABLE logs ADD COLUMN instance TEXT;
