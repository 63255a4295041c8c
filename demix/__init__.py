"""Entry points: the `demix` command, `demix up`, health checks, stats and model folders."""
