"""A guarded generation: the HTTP exchange (handler), the generation itself (run), accounting."""
