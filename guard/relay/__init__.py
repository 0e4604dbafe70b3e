"""From upstream events to client bytes: the guarded relay, halt chunks, non-stream assembly."""
