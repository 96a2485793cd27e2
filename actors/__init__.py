"""roomkeeper's application actors, loaded by the runtime from configuration."""
