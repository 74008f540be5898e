"""The shipped YAML configs (tasks/, methods/, bench/), installed as the package data of
``dmm.configs`` (pyproject.toml maps this folder onto it). This file makes the folder a
regular package, so that wheels and editable installs alike find it through
``importlib.resources``."""
