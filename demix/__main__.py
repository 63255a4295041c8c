from demix.cli import script

script()
