"""Configuration: the YAML file, ${VAR} expansion, typed and validated settings."""
