"""The HTTP layer: request parsing, errors, CORS and SSE framing for the Quart-Trio app."""
