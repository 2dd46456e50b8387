"""The foundation every other layer stands on: config sections and the roles of their keys,
name registries, the error and fault vocabulary, and the process's launch environment.

It imports nothing else of the template, like `seeding/` beside it (import-linter checks both).
"""
