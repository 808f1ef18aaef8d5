"""Where the shipped defaults live: the `configs` package's data, found through importlib.resources so that
an installed wheel reads them wherever it is run from, not relative to the working directory."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

# Installed as a regular package (a wheel or an editable checkout), the data are plain files on disk; the
# loaders read YAML by path, so the Traversable is turned into a Path once here.
CONFIG_DIR = Path(str(files("configs")))
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
POLICY_DIR = CONFIG_DIR / "policies"
DESTINATION_DIR = CONFIG_DIR / "destinations"
SCRIPT_RULES = CONFIG_DIR / "script_rules.yaml"
