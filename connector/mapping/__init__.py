"""Field mappings: YAML specs compiled once into functions that build UserFlux events."""
