"""The shipped configs, installed inside the package as ``pila.lightning_configs``.

This folder holds YAML, not code; the file makes it a package so that the configs are found
through the package in every kind of installation (:mod:`pila.configs` reads them).
"""
