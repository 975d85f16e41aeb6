"""asv suites: one thin module per experiment family, its classes generated from the harness registry."""
