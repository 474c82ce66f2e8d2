"""The bottom layer of ltm: sample-site names, the component registry, shared constants and the
user-error types. It imports nothing else of ltm; everything else may import it."""
