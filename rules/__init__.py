"""The rule catalogue: one YAML file per rule (installed as the package `memlint.rules`)."""
