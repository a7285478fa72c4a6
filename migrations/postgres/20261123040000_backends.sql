-- Several backends: which one answered, and the targets that failed before it.
ALTER TABLE logs ADD COLUMN backend TEXT;   -- the backend's name in config (its type for the single 'backend' form)
ALTER TABLE logs ADD COLUMN attempts TEXT;  -- JSON [{"backend","model","error"}] of failed targets, NULL when the first answered
