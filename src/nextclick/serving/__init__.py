"""Real-time recommendations over HTTP: engine (model + micro-batching), session stores, app."""
