"""Experiment families. Each module registers its cases with `harness.registry.experiment`; modules are
discovered, so adding a family means adding a file. Heavy imports go inside builders."""
